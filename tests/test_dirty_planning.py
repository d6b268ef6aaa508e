"""Late data recomputes exactly the periods it changes, and nothing else (contract).

The end-to-end tests read ``refresh``'s report (how many periods of each kind it
computed) and ``pending_keys`` (which ones are waiting); the planner's pure functions in
``msgcube.rollup.plan`` are unit-tested at the bottom.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from msgcube.domain.endpoints import BY_NAME, Period
from msgcube.domain.messages import parse_record
from msgcube.domain.periods import PeriodKey
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.rollup.engine import _compute, pending_keys, refresh
from msgcube.rollup.plan import (
    closed,
    expected_keys,
    keys_for_days,
    keys_from,
    needed_for,
    pending,
)
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store

from conftest import STAMP, fresh_appid

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=CST)
TODAY = date(2026, 3, 1)  # a Sunday: the week of 2026-02-23 has not ended
D, W, M = Period.DAY, Period.WEEK, Period.MONTH


def _ts(y: int, m: int, d: int, hh: int = 12, mm: int = 0, ss: int = 0, tz: Any = CST) -> int:
    return int(datetime(y, m, d, hh, mm, ss, tzinfo=tz).timestamp())


def _msg(user: str, t: int, msg_id: int, kind: str = "text") -> dict[str, Any]:
    return {"FromUserName": user, "CreateTime": t, "MsgType": kind, "MsgId": msg_id}


def _event(user: str, t: int, event: str) -> dict[str, Any]:
    return {"FromUserName": user, "CreateTime": t, "MsgType": "event", "Event": event}


def _account(store: Store, appid: str) -> Account:
    """Always re-read: ingest moves stats_since, a follower import sets follower_base."""
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    return account


def _store(store: Store, appid: str, records: list[dict[str, Any]], today: date = TODAY) -> None:
    with store.write() as conn:
        account = get_account(conn, appid)
        assert account is not None
        write_batch(conn, account, [parse_record(r) for r in records], today, received_at=STAMP)


def _pending(store: Store, appid: str, today: date = TODAY) -> list[PeriodKey]:
    with store.read() as conn:
        return pending_keys(conn, _account(store, appid), today)


def _computed(store: Store, appid: str, today: date = TODAY) -> dict[Period, int]:
    """How many days, weeks and months a refresh computed (hours are part of their day)."""
    computed = refresh(store, _account(store, appid), today).computed
    assert all(n == 0 for p, n in computed.items() if p not in (D, W, M)), computed
    return {p: computed.get(p, 0) for p in (D, W, M)}


def _counts(day: int = 0, week: int = 0, month: int = 0) -> dict[Period, int]:
    return {D: day, W: week, M: month}


# Baseline traffic, every day from 2025-12-20 to 2026-02-10 (local noon in Shanghai).
BASELINE_DAYS = [date(2025, 12, 20) + timedelta(days=i) for i in range(53)]


def _baseline(store: Store, tz: str = "Asia/Shanghai", *, followers: bool = False) -> str:
    appid = fresh_appid("wxdirty")
    with store.write() as conn:
        add_account(conn, appid=appid, secret="s", tz=tz, now=STAMP)
    records = [
        _msg(f"u{i % 3}", _ts(d.year, d.month, d.day), 1000 + i)
        for i, d in enumerate(BASELINE_DAYS)
    ]
    _store(store, appid, records)
    if followers:
        with store.write() as conn:
            account = get_account(conn, appid)
            assert account is not None
            import_followers(conn, account, ["u0", "fan"], TODAY)
    first = _computed(store, appid)
    assert sum(first.values()) > 0
    assert _computed(store, appid) == _counts(), "a second refresh has nothing to do"
    assert _pending(store, appid) == []
    return appid


def _daily_count(store: Store, appid: str, day: date) -> int:
    rows = served_list(
        store,
        _account(store, appid),
        BY_NAME["getupstreammsg"],
        day.isoformat(),
        day.isoformat(),
        NOW,
    )
    return sum(r["msg_count"] for r in rows)


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("tz", "when", "day", "week", "month"),
    [
        # An ordinary Wednesday.
        ("Asia/Shanghai", _ts(2026, 1, 14), date(2026, 1, 14), date(2026, 1, 12), date(2026, 1, 1)),
        # Sunday 2026-02-01: its week began in January.
        ("Asia/Shanghai", _ts(2026, 2, 1), date(2026, 2, 1), date(2026, 1, 26), date(2026, 2, 1)),
        # One second before the new year, local time: the week spans both years.
        (
            "Asia/Shanghai",
            _ts(2025, 12, 31, 23, 59, 59),
            date(2025, 12, 31),
            date(2025, 12, 29),
            date(2025, 12, 1),
        ),
        # The same instant in a UTC account is 15:59:59 on the same day.
        (
            "UTC",
            _ts(2025, 12, 31, 23, 59, 59),
            date(2025, 12, 31),
            date(2025, 12, 29),
            date(2025, 12, 1),
        ),
        # 2026-02-01 00:30 in Shanghai is still 2026-01-31 in UTC: another week and month.
        ("UTC", _ts(2026, 2, 1, 0, 30), date(2026, 1, 31), date(2026, 1, 26), date(2026, 1, 1)),
    ],
)
def test_late_message_recomputes_its_day_week_and_month_only(
    store: Store, tz: str, when: int, day: date, week: date, month: date
) -> None:
    appid = _baseline(store, tz)
    before = _daily_count(store, appid, day)
    _store(store, appid, [_msg("late", when, 1)])
    assert _pending(store, appid) == [(D, day), (W, week), (M, month)]
    assert _computed(store, appid) == _counts(day=1, week=1, month=1)
    assert _computed(store, appid) == _counts()
    assert _daily_count(store, appid, day) == before + 1


def test_late_message_in_a_follower_account_recomputes_its_periods_only(store: Store) -> None:
    appid = _baseline(store, followers=True)
    _store(store, appid, [_msg("late", _ts(2026, 1, 14), 1)])
    assert _pending(store, appid) == [
        (D, date(2026, 1, 14)),
        (W, date(2026, 1, 12)),
        (M, date(2026, 1, 1)),
    ]
    assert _computed(store, appid) == _counts(day=1, week=1, month=1)


def test_several_late_messages_share_their_periods(store: Store) -> None:
    appid = _baseline(store)
    _store(
        store,
        appid,
        [
            _msg("a", _ts(2026, 1, 12), 1),
            _msg("b", _ts(2026, 1, 12, 18), 2),  # same day
            _msg("c", _ts(2026, 1, 18), 3),  # same week (Sunday)
            _msg("d", _ts(2026, 1, 19), 4),  # next week, same month
        ],
    )
    assert _computed(store, appid) == _counts(day=3, week=2, month=1)


def test_retries_and_reused_msg_ids_recompute_nothing(store: Store) -> None:
    appid = _baseline(store)
    d = BASELINE_DAYS[10]
    retry = _msg("u1", _ts(d.year, d.month, d.day), 1010)  # exactly baseline message #10
    other = _msg("x", _ts(2026, 1, 20), 1011, "image")  # new content, existing MsgId
    _store(store, appid, [retry, other, retry])
    assert _pending(store, appid) == []
    assert _computed(store, appid) == _counts()


def test_uncounted_pushes_recompute_nothing_without_follower_base(store: Store) -> None:
    appid = _baseline(store)
    t = _ts(2026, 1, 14)
    _store(
        store,
        appid,
        [
            _msg("u0", t, 5, "location"),
            _msg("u0", t, 6, "file"),
            _event("u0", t, "subscribe"),
            _event("u1", t, "unsubscribe"),
            _event("u2", t, "CLICK"),
        ],
    )
    assert _pending(store, appid) == []
    assert _computed(store, appid) == _counts()


def _closed_periods_from(first: date, today: date) -> dict[Period, set[date]]:
    """Brute force: every period that ends before ``today`` and whose last day is ≥ first."""
    out: dict[Period, set[date]] = {D: set(), W: set(), M: set()}
    d = date(2025, 1, 1)
    while d < today:
        if d >= first:
            out[D].add(d)
            out[W].add(d - timedelta(days=d.weekday()))
            out[M].add(d.replace(day=1))
        d += timedelta(days=1)
    # Drop the week and month that contain today: they have not ended.
    out[W].discard(today - timedelta(days=today.weekday()))
    out[M].discard(today.replace(day=1))
    return out


def test_follow_event_dirties_every_period_from_its_day_on(store: Store) -> None:
    appid = _baseline(store, followers=True)
    _store(store, appid, [_event("newfan", _ts(2026, 1, 20, 9), "subscribe")])
    want = _closed_periods_from(date(2026, 1, 20), TODAY)
    # 2026-01-20 .. 2026-02-28; weeks of 01-19 .. 02-16 (02-23 ends on TODAY); Jan, Feb.
    assert {p: len(s) for p, s in want.items()} == {D: 40, W: 5, M: 2}
    got = _pending(store, appid)
    assert {p: {s for q, s in got if q is p} for p in (D, W, M)} == want
    assert _computed(store, appid) == _counts(day=40, week=5, month=2)
    # A retried event changes nothing.
    _store(store, appid, [_event("newfan", _ts(2026, 1, 20, 9), "subscribe")])
    assert _computed(store, appid) == _counts()
    # An unsubscribe today touches only periods that have not ended yet.
    _store(store, appid, [_event("u0", _ts(2026, 3, 1, 9), "unsubscribe")])
    assert _computed(store, appid) == _counts()


def test_retried_event_is_reported_as_a_duplicate(store: Store) -> None:
    """What ``write_batch`` reports for events: the retry of a push is no new event, so it
    has no follow day and marks nothing dirty (on PostgreSQL too)."""
    appid = _baseline(store, followers=True)
    push = parse_record(_event("newfan", _ts(2026, 1, 20, 9), "subscribe"))
    results = []
    for batch in ([push], [push], [push, push]):
        with store.write() as conn:
            account = get_account(conn, appid)
            assert account is not None
            r = write_batch(conn, account, batch, TODAY, received_at=STAMP)
        results.append((r.events_new, r.events_duplicate, sorted(r.follow_days)))
    assert results == [(1, 0, [date(2026, 1, 20)]), (0, 1, []), (0, 2, [])]


def test_follow_event_before_the_first_data_dirties_from_its_day(store: Store) -> None:
    appid = _baseline(store, followers=True)
    _store(store, appid, [_event("early", _ts(2025, 12, 10), "unsubscribe")])
    want = _closed_periods_from(date(2025, 12, 10), TODAY)
    got = _pending(store, appid)
    assert {p: {s for q, s in got if q is p} for p in (D, W, M)} == want
    assert _computed(store, appid) == _counts(*(len(want[p]) for p in (D, W, M)))


def test_follower_import_recomputes_everything_since_the_first_day(store: Store) -> None:
    appid = _baseline(store)
    with store.write() as conn:
        account = get_account(conn, appid)
        assert account is not None
        import_followers(conn, account, ["u0", "fan"], TODAY)
    want = _closed_periods_from(BASELINE_DAYS[0], TODAY)
    assert _computed(store, appid) == _counts(*(len(want[p]) for p in (D, W, M)))


def test_uncounted_message_before_the_first_day_of_a_follower_account(store: Store) -> None:
    """It moves the account's first day back: only the new days get (0-row) statistics;
    their week and month were already computed and do not change."""
    appid = _baseline(store, followers=True)
    _store(store, appid, [_msg("u0", _ts(2025, 12, 16), 7, "location")])  # Tuesday
    assert _account(store, appid).stats_since == date(2025, 12, 16)
    assert _pending(store, appid) == [(D, date(2025, 12, 16 + i)) for i in range(4)]
    assert _computed(store, appid) == _counts(day=4)


def test_a_query_computes_only_what_it_serves(store: Store) -> None:
    appid = _baseline(store)
    _store(store, appid, [_msg("late", _ts(2026, 1, 14), 1)])
    week, month = date(2026, 1, 12), date(2026, 1, 1)
    served_list(
        store,
        _account(store, appid),
        BY_NAME["getupstreammsghour"],
        "2026-01-14",
        "2026-01-14",
        NOW,
    )
    assert _pending(store, appid) == [(W, week), (M, month)]
    served_list(
        store,
        _account(store, appid),
        BY_NAME["getupstreammsgdistweek"],
        "2026-01-12",
        "2026-01-12",
        NOW,
    )
    assert _pending(store, appid) == [(M, month)]
    served_list(
        store,
        _account(store, appid),
        BY_NAME["getupstreammsgmonth"],
        "2026-01-01",
        "2026-01-01",
        NOW,
    )
    assert _pending(store, appid) == []


def test_a_week_query_first_brings_its_pending_days_up_to_date(store: Store) -> None:
    appid = _baseline(store)
    _store(store, appid, [_msg("late", _ts(2026, 1, 14), 1)])
    rows = served_list(
        store,
        _account(store, appid),
        BY_NAME["getupstreammsgweek"],
        "2026-01-12",
        "2026-01-12",
        NOW,
    )
    assert sum(r["msg_count"] for r in rows) == 7 + 1
    assert _pending(store, appid) == [(M, date(2026, 1, 1))]


def test_a_day_that_has_not_ended_is_not_computed_yet(store: Store) -> None:
    appid = _baseline(store)
    _store(store, appid, [_msg("now", _ts(2026, 3, 1, 9), 1)])
    assert _pending(store, appid) == []
    assert _computed(store, appid) == _counts()
    # The next day it is: the day, its week (which ended on 03-01) — not yet March.
    tomorrow = TODAY + timedelta(days=1)
    assert _pending(store, appid, tomorrow) == [(D, TODAY), (W, date(2026, 2, 23))]


# --------------------------------------------------------------------------- plan.py


def test_keys_for_days() -> None:
    assert keys_for_days([]) == set()
    assert keys_for_days([date(2026, 2, 1)]) == {
        (D, date(2026, 2, 1)),
        (W, date(2026, 1, 26)),
        (M, date(2026, 2, 1)),
    }
    assert keys_for_days([date(2025, 12, 31), date(2026, 1, 1), date(2026, 1, 1)]) == {
        (D, date(2025, 12, 31)),
        (D, date(2026, 1, 1)),
        (W, date(2025, 12, 29)),
        (M, date(2025, 12, 1)),
        (M, date(2026, 1, 1)),
    }


def test_keys_from() -> None:
    assert keys_from(date(2026, 2, 3), date(2026, 2, 2)) == set()
    assert keys_from(date(2026, 1, 14), date(2026, 1, 14)) == {
        (D, date(2026, 1, 14)),
        (W, date(2026, 1, 12)),
        (M, date(2026, 1, 1)),
    }
    # Saturday to Monday across a month end: the week and month containing ``first`` are
    # included although they start before it, as are the unfinished ones of ``today``.
    assert keys_from(date(2026, 1, 31), date(2026, 2, 2)) == {
        (D, date(2026, 1, 31)),
        (D, date(2026, 2, 1)),
        (D, date(2026, 2, 2)),
        (W, date(2026, 1, 26)),
        (W, date(2026, 2, 2)),
        (M, date(2026, 1, 1)),
        (M, date(2026, 2, 1)),
    }
    assert keys_from(date(2026, 1, 14), TODAY) == keys_for_days(
        date(2026, 1, 14) + timedelta(days=i) for i in range((TODAY - date(2026, 1, 14)).days + 1)
    )


def test_closed_orders_days_then_weeks_then_months_by_date() -> None:
    keys: list[PeriodKey] = [
        (M, date(2026, 1, 1)),
        (W, date(2026, 1, 5)),
        (D, date(2026, 1, 9)),
        (D, date(2026, 1, 2)),
        (W, date(2025, 12, 29)),
        (M, date(2025, 12, 1)),
        (D, date(2026, 1, 11)),  # "today": not closed
        (W, date(2026, 1, 5) + timedelta(days=7)),  # contains today
        (M, date(2026, 2, 1)),  # future
    ]
    random.Random(7).shuffle(keys)
    assert closed(keys, date(2026, 1, 11)) == [
        (D, date(2026, 1, 2)),
        (D, date(2026, 1, 9)),
        (W, date(2025, 12, 29)),
        (M, date(2025, 12, 1)),
    ]
    # Week 2026-01-05 ends on Sunday 01-11, month January on the 31st.
    assert (W, date(2026, 1, 5)) in closed(keys, date(2026, 1, 12))
    assert (M, date(2026, 1, 1)) not in closed(keys, date(2026, 1, 31))
    assert (M, date(2026, 1, 1)) in closed(keys, date(2026, 2, 1))


def test_pending() -> None:
    today = date(2026, 1, 20)
    states = {
        (D, date(2026, 1, 2)): (3, 2),  # dirty again since last computed
        (D, date(2026, 1, 3)): (2, 2),  # up to date
        (D, date(2026, 1, 20)): (1, 0),  # dirty but not ended
        (W, date(2026, 1, 5)): (1, 0),
        (M, date(2025, 12, 1)): (1, 0),
    }
    assert pending(states, today) == [
        (D, date(2026, 1, 2)),
        (W, date(2026, 1, 5)),
        (M, date(2025, 12, 1)),
    ]
    expected = {(D, date(2026, 1, 3)), (D, date(2026, 1, 4)), (W, date(2026, 1, 19))}
    # Expected keys never computed are pending; known up-to-date ones and unended ones not.
    assert pending(states, today, expected=expected) == [
        (D, date(2026, 1, 2)),
        (D, date(2026, 1, 4)),
        (W, date(2026, 1, 5)),
        (M, date(2025, 12, 1)),
    ]
    assert pending({}, today) == []


def test_expected_keys() -> None:
    assert expected_keys(None, TODAY) == set()
    got = expected_keys(date(2026, 2, 20), TODAY)
    assert {k for k in got if k[0] is D} == {(D, date(2026, 2, 20 + i)) for i in range(9)}
    assert closed(got, TODAY) == [
        *((D, date(2026, 2, 20 + i)) for i in range(9)),
        (W, date(2026, 2, 16)),
        (M, date(2026, 2, 1)),
    ]


def test_needed_for() -> None:
    assert needed_for([(D, date(2026, 1, 14))]) == set()
    assert needed_for([(W, date(2025, 12, 29))]) == {
        (D, date(2025, 12, 29) + timedelta(days=i)) for i in range(7)
    }
    feb = needed_for([(M, date(2026, 2, 1))])
    assert len(feb) == 28
    assert min(feb) == (D, date(2026, 2, 1))
    assert max(feb) == (D, date(2026, 2, 28))


def test_timestamps_used_here_are_what_they_claim() -> None:
    assert datetime.fromtimestamp(_ts(2026, 2, 1, 0, 30), UTC).date() == date(2026, 1, 31)
    assert datetime.fromtimestamp(_ts(2025, 12, 31, 23, 59, 59), CST).day == 31


def test_a_push_between_the_day_and_the_week_rollup_is_not_lost(store: Store) -> None:
    """The race the callback test found: a refresh plans its keys, computes the days, and a
    push for one of those days lands before the weeks are computed. The week must not be
    marked done from the stale user_day rows of that day."""
    appid = fresh_appid("wxrace")
    with store.write() as conn:
        add_account(conn, appid=appid, secret="s", tz="Asia/Shanghai", now=STAMP)
    day, week, month = date(2026, 2, 17), date(2026, 2, 16), date(2026, 2, 1)
    _store(store, appid, [_msg("a", _ts(2026, 2, 17), 1), _msg("b", _ts(2026, 2, 18), 2)])
    account = _account(store, appid)
    with store.write() as conn:  # the days of this refresh ...
        _compute(conn, account, D, [day, date(2026, 2, 18)])
    _store(store, appid, [_msg("a", _ts(2026, 2, 17, 13), 3)])  # ... a push lands ...
    with store.write() as conn:  # ... then its weeks and months
        _compute(conn, account, W, [week])
        _compute(conn, account, M, [month])
    assert _pending(store, appid) == []
    for name, begin in (
        ("getupstreammsgweek", week),
        ("getupstreammsgmonth", month),
        ("getupstreammsg", day),
    ):
        rows = served_list(
            store, _account(store, appid), BY_NAME[name], begin.isoformat(), begin.isoformat(), NOW
        )
        assert sum(r["msg_count"] for r in rows) == (3 if name != "getupstreammsg" else 2), name
