"""The contract's invariants as properties of what ``served_list`` serves, on both backends.

Unlike tests/test_rollup_oracle.py these do not recompute the answer: they check that the
served numbers agree *with each other* (hours with days, days with weeks and months,
summaries with distributions) and, for the two facts that need it, with a plain count of
the raw messages. Data: one account (Shanghai or UTC), 1–8 users, messages over full
weeks 2025-12-22..2026-02-08 (so December, January and February are all touched), with
bursts big enough for every count_interval, non-counted types, events and retries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgcube.domain.endpoints import BY_NAME
from msgcube.domain.messages import parse_record
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import add_account, get_account
from msgcube.storage.db import Store

from conftest import BACKENDS, STAMP, STORE_FIXTURES, fresh_appid

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=8)))
TODAY = date(2026, 3, 1)
FIRST, LAST = date(2025, 12, 22), date(2026, 2, 8)  # a Monday and a Sunday
COUNTED = {"text": 1, "image": 2, "voice": 3, "video": 4, "shortvideo": 4, "link": 6}
KINDS = [*COUNTED, "text", "text", "location", "file", "event"]
# Every day any message can fall on (a UTC time near LAST's midnight is 02-09 in Shanghai).
ALL_DAYS = [date(2025, 12, 1) + timedelta(days=i) for i in range(90)]  # 12-01 .. 02-28

Record = dict[str, Any]
Row = dict[str, Any]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Store:
    """The session's database of one backend; module-scoped because hypothesis runs every
    example inside one test call (a function-scoped fixture would be shared anyway), and
    safe to share because each example registers a brand-new account (``fresh_appid``)."""
    return request.getfixturevalue(STORE_FIXTURES[request.param])  # type: ignore[no-any-return]


@st.composite
def datasets(draw: st.DrawFn) -> tuple[str, list[list[Record]], list[str] | None, bool]:
    """(tz, batches, follower list or None, refresh before querying?)."""
    tz = draw(st.sampled_from(["Asia/Shanghai", "UTC"]))
    users = [f"oU{i}" for i in range(draw(st.integers(1, 8)))]
    records: list[Record] = []
    for _ in range(draw(st.integers(0, 12))):
        user = draw(st.sampled_from(users))
        day = FIRST + timedelta(days=draw(st.integers(0, (LAST - FIRST).days)))
        second = draw(st.one_of(st.integers(0, 86399), st.integers(-60, 60)))
        start = int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp())
        kind = draw(st.sampled_from(KINDS))
        step = draw(st.sampled_from([0, 7, 1800]))
        for i in range(draw(st.one_of(st.integers(1, 3), st.integers(4, 14)))):
            t = start + second + i * step
            if kind == "event":
                event = draw(st.sampled_from(["subscribe", "unsubscribe"]))
                records.append(
                    {"FromUserName": user, "CreateTime": t, "MsgType": "event", "Event": event}
                )
            else:
                records.append(
                    {
                        "FromUserName": user,
                        "CreateTime": t,
                        "MsgType": kind,
                        "MsgId": len(records) + 1,
                    }
                )
    if records:
        for i in draw(st.lists(st.integers(0, len(records) - 1), max_size=3)):
            records.append(dict(records[i]))  # an exact retry
    cut = draw(st.integers(0, len(records)))
    followers = draw(st.none() | st.lists(st.sampled_from([*users, "fan"]), unique=True))
    return tz, [records[:cut], records[cut:]], followers, draw(st.booleans())


@dataclass
class Served:
    """Everything the endpoints serve for the account, indexed by period label."""

    tz: str
    raw: list[tuple[str, int, int]]  # (openid, msg_type, create_time) of counted messages
    day: dict[date, list[Row]] = field(default_factory=lambda: defaultdict(list))
    hour: dict[date, list[Row]] = field(default_factory=lambda: defaultdict(list))
    week: dict[date, list[Row]] = field(default_factory=lambda: defaultdict(list))
    month: dict[date, list[Row]] = field(default_factory=lambda: defaultdict(list))
    dist: dict[str, dict[date, list[Row]]] = field(
        default_factory=lambda: {p: defaultdict(list) for p in ("day", "week", "month")}
    )

    def local_day(self, create_time: int) -> date:
        return datetime.fromtimestamp(create_time, ZoneInfo(self.tz)).date()

    def counted_on(self, first: date, last: date) -> list[tuple[str, int]]:
        return [(o, t) for o, t, ct in self.raw if first <= self.local_day(ct) <= last]


def _windows(span: int) -> Iterator[tuple[str, str]]:
    d = ALL_DAYS[0]
    while d <= ALL_DAYS[-1]:
        yield d.isoformat(), min(d + timedelta(days=span - 1), ALL_DAYS[-1]).isoformat()
        d += timedelta(days=span)


def build(store: Store, dataset: tuple[str, list[list[Record]], list[str] | None, bool]) -> Served:
    tz, batches, followers, refresh_first = dataset
    appid = fresh_appid("wxinv")
    with store.write() as conn:
        add_account(conn, appid=appid, secret="s", tz=tz, now=STAMP)
    for batch in batches:
        with store.write() as conn:
            account = get_account(conn, appid)
            assert account is not None
            write_batch(conn, account, [parse_record(r) for r in batch], TODAY, received_at=STAMP)
    if followers is not None:
        with store.write() as conn:
            account = get_account(conn, appid)
            assert account is not None
            import_followers(conn, account, followers, TODAY)
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    if refresh_first:
        refresh(store, account, TODAY)
    # The raw counted messages, deduplicated by MsgId (first stored wins).
    first_by_id: dict[int, Record] = {}
    for r in (r for b in batches for r in b if r["MsgType"] != "event"):
        first_by_id.setdefault(r["MsgId"], r)
    raw = [
        (r["FromUserName"], COUNTED[r["MsgType"]], r["CreateTime"])
        for r in first_by_id.values()
        if r["MsgType"] in COUNTED
    ]
    served = Served(tz, raw)

    def ask(name: str, b: str, e: str) -> list[Row]:
        return served_list(store, account, BY_NAME[name], b, e, NOW)

    for b, e in _windows(7):
        for row in ask("getupstreammsg", b, e):
            served.day[date.fromisoformat(row["ref_date"])].append(row)
    for b, e in _windows(15):
        for row in ask("getupstreammsgdist", b, e):
            served.dist["day"][date.fromisoformat(row["ref_date"])].append(row)
    # Hours of every day with data, and of a few without (which must have none).
    for d in sorted(set(served.day) | set(ALL_DAYS[::9])):
        for row in ask("getupstreammsghour", d.isoformat(), d.isoformat()):
            served.hour[d].append(row)
    for b, e in _windows(30):
        for name, target in (
            ("getupstreammsgweek", served.week),
            ("getupstreammsgmonth", served.month),
            ("getupstreammsgdistweek", served.dist["week"]),
            ("getupstreammsgdistmonth", served.dist["month"]),
        ):
            for row in ask(name, b, e):
                target[date.fromisoformat(row["ref_date"])].append(row)
    return served


LABELS = {
    "day": ALL_DAYS,
    "week": [d for d in ALL_DAYS if d.weekday() == 0 and d + timedelta(days=6) < TODAY],
    "month": [d for d in ALL_DAYS if d.day == 1],
}
"""Every period the queries above cover (all of them have ended by TODAY)."""


def _by_type(rows: list[Row]) -> dict[int, Row]:
    out = {r["msg_type"]: r for r in rows}
    assert len(out) == len(rows), f"one row per msg_type expected: {rows}"
    return out


def _days_of(label: date, period: str) -> list[date]:
    if period == "week":
        return [label + timedelta(days=i) for i in range(7)]
    return [d for d in ALL_DAYS if (d.year, d.month) == (label.year, label.month)]


SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(dataset=datasets())
def test_daily_counts_add_up_to_the_counted_messages_of_the_day(db: Store, dataset: Any) -> None:
    served = build(db, dataset)
    for d in ALL_DAYS:
        rows = served.day.get(d, [])
        assert sum(r["msg_count"] for r in rows) == len(served.counted_on(d, d)), d
        for r in rows:
            assert 1 <= r["msg_user"] <= r["msg_count"], r


@SETTINGS
@given(dataset=datasets())
def test_intervals_one_to_three_add_up_to_the_distinct_senders(db: Store, dataset: Any) -> None:
    served = build(db, dataset)
    for period, by_label in served.dist.items():
        for label in LABELS[period]:
            days = [label] if period == "day" else _days_of(label, period)
            msgs = served.counted_on(days[0], days[-1])
            rows = {r["count_interval"]: r["msg_user"] for r in by_label.get(label, [])}
            assert set(rows) <= {0, 1, 2, 3}
            assert all(n > 0 for n in rows.values()), "zero rows are omitted"
            assert sum(rows.get(i, 0) for i in (1, 2, 3)) == len({o for o, _ in msgs}), label
            # The intervals also bound the number of messages: 1–5, 6–10, 11+ each.
            low = rows.get(1, 0) + 6 * rows.get(2, 0) + 11 * rows.get(3, 0)
            high = 5 * rows.get(1, 0) + 10 * rows.get(2, 0)
            assert low <= len(msgs), label
            assert rows.get(3, 0) > 0 or len(msgs) <= high, label


@SETTINGS
@given(dataset=datasets())
def test_weeks_and_months_agree_with_their_days(db: Store, dataset: Any) -> None:
    served = build(db, dataset)
    for period, by_label in (("week", served.week), ("month", served.month)):
        labels = {
            d - timedelta(days=d.weekday()) if period == "week" else d.replace(day=1)
            for d in served.day
        }
        assert set(by_label) == labels, f"a {period} row exactly where some day has one"
        for label, rows in by_label.items():
            days = _days_of(label, period)
            daily = [_by_type(served.day.get(d, [])) for d in days]
            for t, row in _by_type(rows).items():
                of_type = [x[t] for x in daily if t in x]
                assert row["msg_count"] == sum(x["msg_count"] for x in of_type), (label, t)
                users = [x["msg_user"] for x in of_type]
                assert max(users) <= row["msg_user"] <= sum(users), (label, t)
            for t in {t for x in daily for t in x}:
                assert t in _by_type(rows), (label, t)


@SETTINGS
@given(dataset=datasets())
def test_hours_add_up_to_their_day(db: Store, dataset: Any) -> None:
    served = build(db, dataset)
    assert set(served.hour) <= set(served.day)
    for d in ALL_DAYS:
        daily = _by_type(served.day.get(d, []))
        hours: dict[int, list[Row]] = defaultdict(list)
        for r in served.hour.get(d, []):
            assert r["ref_hour"] in range(0, 2400, 100), r
            assert 1 <= r["msg_user"] <= r["msg_count"], r
            hours[r["msg_type"]].append(r)
        assert set(hours) == set(daily), d
        for t, rows in hours.items():
            assert sum(r["msg_count"] for r in rows) == daily[t]["msg_count"], (d, t)
            users = [r["msg_user"] for r in rows]
            assert max(users) <= daily[t]["msg_user"] <= sum(users), (d, t)


@SETTINGS
@given(dataset=datasets())
def test_distribution_senders_bounded_by_summary_users(db: Store, dataset: Any) -> None:
    """Distinct senders of a period lie between the biggest msg_type audience and their sum."""
    served = build(db, dataset)
    for period, summary in (("day", served.day), ("week", served.week), ("month", served.month)):
        for label, rows in summary.items():
            senders = sum(
                r["msg_user"] for r in served.dist[period].get(label, []) if r["count_interval"] > 0
            )
            users = [r["msg_user"] for r in rows]
            assert max(users) <= senders <= sum(users), (period, label)
            count = sum(r["msg_count"] for r in rows)
            assert senders <= count, (period, label)
