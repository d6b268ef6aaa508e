"""``served_list`` equals the brute-force oracle (tests/oracle.py), on SQLite and PostgreSQL.

Random pushes cluster around local midnights (of Shanghai *and* UTC, whatever the
account's zone), across the week boundaries 2025-12-28/29 and 2026-01-04/05, the year
boundary and the month boundary 2026-01-31/02-01, with every MsgType, follow events
(including a subscribe and an unsubscribe at the same second), MsgId collisions
(first stored wins) and exact retries. They are stored in two phases: phase 1, a
refresh, then phase 2 — late data for days that are already rolled up — and then
either another refresh or none, so that ``served_list`` has to compute pending periods
itself. A follower list may be imported before, between or after the phases.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgcube.domain.endpoints import BY_NAME, ENDPOINTS
from msgcube.domain.messages import parse_record
from msgcube.errors import ApiError
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store

from conftest import BACKENDS, STAMP, STORE_FIXTURES, fresh_appid
from oracle import OracleAccount, OracleError, local_midnight

SHANGHAI, UTC = "Asia/Shanghai", "UTC"
CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=CST)
TODAY = date(2026, 3, 1)  # local "today" at NOW in both zones (04:00 UTC)
DATA_DAYS = [date(2025, 12, 26) + timedelta(days=i) for i in range(12)] + [
    date(2026, 1, 31),
    date(2026, 2, 1),
]
KINDS = [
    "text",
    "text",
    "image",
    "voice",
    "video",
    "shortvideo",
    "link",
    "location",
    "file",
    "subscribe",
    "unsubscribe",
    "CLICK",
    "tie",
]
FOLLOW_ONLY = ["fan0", "fan1", "fan2"]  # openids in the follower list who never write

Record = dict[str, Any]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest) -> Store:
    """The session's database of one backend.

    Module-scoped rather than the function-scoped ``store`` fixture: hypothesis runs all
    examples inside one test call, so a function-scoped fixture would be shared by them
    anyway (hence its health check). Sharing is what we want: the store is a session-wide
    database and every example registers brand-new accounts (``fresh_appid``), so no
    example can see another's rows and no reset between examples is needed.
    """
    return request.getfixturevalue(STORE_FIXTURES[request.param])  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- generation


@st.composite
def bursts(draw: st.DrawFn, users: Sequence[str]) -> list[Record]:
    """One user's run of pushes of one kind, near a local midnight or anywhere in a day.

    Bursts of up to 13 messages reach count_interval 2 and (with two bursts) 3; a step of
    0 s puts several pushes at the same second, 600 s or 3600 s steps cross midnight.
    """
    user = draw(st.sampled_from(users))
    day = draw(st.sampled_from(DATA_DAYS))
    anchor = draw(st.sampled_from([SHANGHAI, UTC]))
    offset = draw(
        st.one_of(
            st.integers(-90, 90),
            st.sampled_from([-1, 0, 3599, 3600, 86399, 86400]),
            st.integers(-3 * 3600, 3 * 3600),
            st.integers(0, 86399),
        )
    )
    start = local_midnight(day, anchor) + offset
    kind = draw(st.sampled_from(KINDS))
    size = draw(st.one_of(st.just(1), st.integers(1, 4), st.integers(5, 13)))
    step = draw(st.sampled_from([0, 1, 59, 600, 3600]))
    out: list[Record] = []
    for i in range(size):
        t = start + i * step
        if kind == "tie":
            pair = ["subscribe", "unsubscribe"]
            if draw(st.booleans()):
                pair.reverse()
            out += [_event(user, t, ev) for ev in pair]
        elif kind in ("subscribe", "unsubscribe", "CLICK"):
            out.append(_event(user, t, kind))
        else:
            out.append({"FromUserName": user, "CreateTime": t, "MsgType": kind, "MsgId": 0})
    return out


def _event(user: str, t: int, event: str) -> Record:
    return {"FromUserName": user, "CreateTime": t, "MsgType": "event", "Event": event}


def _split(draw: st.DrawFn, records: list[Record]) -> list[list[Record]]:
    """Cut a phase into 1–3 batches (one transaction each)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=2)))
    bounds = [0, *cuts, len(records)]
    return [records[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@dataclass
class AccountPlan:
    tz: str
    phase1: list[list[Record]]
    phase2: list[list[Record]]
    followers: list[str] | None
    follower_stage: int  # 0: before phase 1, 1: after the first refresh, 2: after phase 2


@dataclass
class Scenario:
    accounts: list[AccountPlan]
    phase1_today: date
    refresh_again: bool


@st.composite
def account_plans(draw: st.DrawFn, tz: str) -> AccountPlan:
    users = [f"oUser{i}" for i in range(draw(st.integers(1, 8)))]
    sizes = st.one_of(st.just(0), st.integers(0, 2), st.integers(0, 10))
    records = [r for b in draw(st.lists(bursts(users), max_size=draw(sizes))) for r in b]
    # MsgIds: sequential from a base shared between accounts (ids are per account)...
    base = draw(st.sampled_from([1, 2**62, 2**63 - 1000]))
    for i, r in enumerate(records):
        if r["MsgType"] != "event":
            r["MsgId"] = base + i
    messages = [i for i, r in enumerate(records) if r["MsgType"] != "event"]
    if messages:
        # ...with some collisions: a different push reusing an earlier MsgId (first wins)...
        for i, j in draw(st.lists(st.tuples(*[st.sampled_from(messages)] * 2), max_size=3)):
            records[max(i, j)]["MsgId"] = records[min(i, j)]["MsgId"]
    late = draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
    phase1 = [r for r, is_late in zip(records, late, strict=True) if not is_late]
    phase2 = [r for r, is_late in zip(records, late, strict=True) if is_late]
    # ...and exact retries of any push, in either phase (counted once).
    if records:
        for i, into_late in draw(
            st.lists(st.tuples(st.integers(0, len(records) - 1), st.booleans()), max_size=4)
        ):
            (phase2 if into_late else phase1).append(dict(records[i]))
    followers = draw(st.none() | st.lists(st.sampled_from(users + FOLLOW_ONLY), unique=True))
    return AccountPlan(
        tz=tz,
        phase1=_split(draw, phase1),
        phase2=_split(draw, phase2),
        followers=followers,
        follower_stage=draw(st.integers(0, 2)),
    )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    zones = draw(st.sampled_from([[SHANGHAI], [UTC], [SHANGHAI, UTC], [UTC, SHANGHAI]]))
    return Scenario(
        accounts=[draw(account_plans(tz)) for tz in zones],
        # The first refresh runs at the end (everything closed) or part-way through the
        # data (phase-1 pushes dated after it are early clock skew; their days close later).
        phase1_today=draw(st.sampled_from([TODAY, date(2026, 1, 2), date(2026, 1, 5)])),
        refresh_again=draw(st.booleans()),
    )


# --------------------------------------------------------------------------- running


@dataclass
class Pair:
    appid: str
    oracle: OracleAccount

    def account(self, store: Store) -> Account:
        """Re-read: ingest moves ``stats_since``, a follower import sets ``follower_base``."""
        with store.read() as conn:
            account = get_account(conn, self.appid)
        assert account is not None
        return account


def _ingest(store: Store, pair: Pair, batches: list[list[Record]], today: date) -> None:
    for batch in batches:
        with store.write() as conn:
            account = get_account(conn, pair.appid)
            assert account is not None
            write_batch(conn, account, [parse_record(r) for r in batch], today, received_at=STAMP)
        pair.oracle.store(batch)


def _import_followers(store: Store, pair: Pair, openids: list[str], today: date) -> None:
    with store.write() as conn:
        account = get_account(conn, pair.appid)
        assert account is not None
        import_followers(conn, account, openids, today)
    pair.oracle.import_followers(openids, today)


def run(store: Store, scenario: Scenario) -> list[Pair]:
    pairs: list[Pair] = []
    for plan in scenario.accounts:
        appid = fresh_appid("wxoracle")
        with store.write() as conn:
            add_account(conn, appid=appid, secret="s", tz=plan.tz, now=STAMP)
        pairs.append(Pair(appid, OracleAccount(plan.tz)))
    plans = list(zip(scenario.accounts, pairs, strict=True))
    for stage in range(3):
        for plan, pair in plans:
            if plan.followers is not None and plan.follower_stage == stage:
                _import_followers(
                    store, pair, plan.followers, scenario.phase1_today if stage == 0 else TODAY
                )
        if stage == 0:
            for plan, pair in plans:
                _ingest(store, pair, plan.phase1, scenario.phase1_today)
                refresh(store, pair.account(store), scenario.phase1_today)
        elif stage == 1:
            for plan, pair in plans:
                _ingest(store, pair, plan.phase2, TODAY)
    if scenario.refresh_again:
        for pair in pairs:
            refresh(store, pair.account(store), TODAY)
    return pairs


FIXED_RANGES: dict[str, list[tuple[str, str]]] = {
    "day": [
        ("2025-12-25", "2025-12-31"),
        ("2026-01-01", "2026-01-07"),
        ("2026-01-28", "2026-02-03"),
        ("2026-02-22", "2026-02-28"),
    ],
    "hour": [
        (d.isoformat(), d.isoformat())
        for d in [date(2025, 12, 25) + timedelta(days=i) for i in range(14)]
        + [date(2026, 1, 30), date(2026, 1, 31), date(2026, 2, 1), date(2026, 2, 2)]
    ],
    "dist": [
        ("2025-12-22", "2026-01-05"),
        ("2026-01-06", "2026-01-20"),
        ("2026-01-21", "2026-02-04"),
        ("2026-02-14", "2026-02-28"),
    ],
    "week": [
        ("2025-12-15", "2026-01-13"),
        ("2026-01-14", "2026-02-12"),
        ("2026-01-30", "2026-02-28"),
    ],
    "month": [
        ("2025-11-20", "2025-12-19"),
        ("2025-12-20", "2026-01-18"),
        ("2026-01-20", "2026-02-18"),
    ],
}


def _fixed_ranges(name: str) -> list[tuple[str, str]]:
    if name == "getupstreammsg":
        return FIXED_RANGES["day"]
    if name == "getupstreammsghour":
        return FIXED_RANGES["hour"]
    if name == "getupstreammsgdist":
        return FIXED_RANGES["dist"]
    return FIXED_RANGES["week" if name.endswith("week") else "month"]


def random_range(span: int) -> st.SearchStrategy[tuple[str, str]]:
    """A range that is usually valid; length ``span`` (one too many) or an end on/after
    today now and then, so that the error paths are compared with the oracle too."""
    first = date(2025, 11, 20)

    def as_text(offsets: tuple[int, int]) -> tuple[str, str]:
        begin = first + timedelta(days=offsets[0])
        return begin.isoformat(), (begin + timedelta(days=offsets[1])).isoformat()

    return st.tuples(st.integers(0, (TODAY - first).days), st.integers(0, span)).map(as_text)


def served_or_error(store: Store, account: Account, name: str, b: str, e: str) -> Any:
    try:
        return served_list(store, account, BY_NAME[name], b, e, NOW)
    except ApiError as exc:
        return ("errcode", exc.errcode)


def oracle_or_error(oracle: OracleAccount, name: str, b: str, e: str) -> Any:
    try:
        return oracle.served(name, b, e, NOW)
    except OracleError as exc:
        return ("errcode", exc.errcode)


def assert_all_endpoints_agree(
    store: Store, pairs: list[Pair], extra: Mapping[str, list[tuple[str, str]]]
) -> None:
    for pair in pairs:
        account = pair.account(store)
        for ep in ENDPOINTS:
            for b, e in _fixed_ranges(ep.name) + extra.get(ep.name, []):
                got = served_or_error(store, account, ep.name, b, e)
                want = oracle_or_error(pair.oracle, ep.name, b, e)
                assert got == want, f"{ep.name} {b}..{e} tz={account.tz} appid={pair.appid}"


# --------------------------------------------------------------------------- the properties


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), data=st.data())
def test_served_list_equals_oracle(db: Store, scenario: Scenario, data: st.DataObject) -> None:
    pairs = run(db, scenario)
    extra = {
        ep.name: data.draw(st.lists(random_range(ep.span_classic), max_size=2), label=ep.name)
        for ep in ENDPOINTS
    }
    assert_all_endpoints_agree(db, pairs, extra)
    # Asking twice changes nothing (the first answer may have computed pending periods).
    for pair in pairs:
        account = pair.account(db)
        for ep in ENDPOINTS:
            b, e = _fixed_ranges(ep.name)[0]
            assert served_or_error(db, account, ep.name, b, e) == oracle_or_error(
                pair.oracle, ep.name, b, e
            )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios(), late=st.lists(bursts([f"oUser{i}" for i in range(4)]), max_size=4))
def test_answers_stay_exact_after_more_late_data(
    db: Store, scenario: Scenario, late: list[list[Record]]
) -> None:
    """Query (which computes and caches rows), add more late data, query again."""
    pairs = run(db, scenario)
    assert_all_endpoints_agree(db, pairs, {})
    records = [r for b in late for r in b]
    for i, r in enumerate(records):
        if r["MsgType"] != "event":
            r["MsgId"] = 10**9 + i
    for pair in pairs:
        _ingest(db, pair, [records], TODAY)
    assert_all_endpoints_agree(db, pairs, {})


# --------------------------------------------------------------------------- worked examples


def _msg(user: str, t: int, kind: str, msg_id: int) -> Record:
    return {"FromUserName": user, "CreateTime": t, "MsgType": kind, "MsgId": msg_id}


def test_oracle_worked_example_midnight_week_and_year() -> None:
    """The oracle itself, on numbers worked out by hand (so the properties test something)."""
    o = OracleAccount(SHANGHAI)
    midnight = local_midnight(date(2026, 1, 1), SHANGHAI)  # Thursday 2026-01-01 00:00 +08
    o.store(
        [
            _msg("a", midnight - 1, "text", 1),  # 2025-12-31 23:59:59
            _msg("a", midnight, "text", 2),  # 2026-01-01 00:00:00
            _msg("a", midnight, "image", 2),  # MsgId retry with other content: ignored
            _msg("b", midnight + 3600, "shortvideo", 3),
            _msg("b", midnight + 3601, "video", 4),
            _msg("b", midnight + 3602, "location", 5),  # stored, not counted
            _event("b", midnight + 3603, "subscribe"),  # not a message
        ]
    )
    assert o.served("getupstreammsg", "2025-12-31", "2026-01-01", NOW) == [
        {"ref_date": "2025-12-31", "msg_type": 1, "msg_user": 1, "msg_count": 1},
        {"ref_date": "2026-01-01", "msg_type": 1, "msg_user": 1, "msg_count": 1},
        {"ref_date": "2026-01-01", "msg_type": 4, "msg_user": 1, "msg_count": 2},
    ]
    assert o.served("getupstreammsghour", "2026-01-01", "2026-01-01", NOW) == [
        {"ref_date": "2026-01-01", "ref_hour": 0, "msg_type": 1, "msg_user": 1, "msg_count": 1},
        {"ref_date": "2026-01-01", "ref_hour": 100, "msg_type": 4, "msg_user": 1, "msg_count": 2},
    ]
    # Week of Monday 2025-12-29 spans the new year; a month row is labelled with its 1st,
    # and only a label inside [begin, end] is reported (12-03..01-01 is January only).
    assert o.served("getupstreammsgweek", "2025-12-29", "2025-12-29", NOW) == [
        {"ref_date": "2025-12-29", "msg_type": 1, "msg_user": 1, "msg_count": 2},
        {"ref_date": "2025-12-29", "msg_type": 4, "msg_user": 1, "msg_count": 2},
    ]
    assert o.served("getupstreammsgmonth", "2025-12-01", "2025-12-30", NOW) == [
        {"ref_date": "2025-12-01", "msg_type": 1, "msg_user": 1, "msg_count": 1},
    ]
    assert o.served("getupstreammsgmonth", "2025-12-03", "2026-01-01", NOW) == [
        {"ref_date": "2026-01-01", "msg_type": 1, "msg_user": 1, "msg_count": 1},
        {"ref_date": "2026-01-01", "msg_type": 4, "msg_user": 1, "msg_count": 2},
    ]
    # A week whose label is outside the range, or which has not ended, is not reported.
    assert o.served("getupstreammsgweek", "2025-12-30", "2026-01-04", NOW) == []
    assert o.served("getupstreammsgweek", "2026-02-23", "2026-02-28", NOW) == []
    with pytest.raises(OracleError) as err:
        o.served("getupstreammsg", "2026-01-01", "2026-01-08", NOW)  # 8 days > span 7
    assert err.value.errcode == 61501


def test_oracle_worked_example_distribution_and_followers() -> None:
    o = OracleAccount(UTC)
    t0 = local_midnight(date(2026, 1, 5), UTC)  # Monday
    o.store(
        [_msg("heavy", t0 + i, "text", 100 + i) for i in range(11)]  # 11: interval 3
        + [_msg("mid", t0 + i, "voice", 200 + i) for i in range(6)]  # 6: interval 2
        + [_msg("light", t0, "link", 300)]
        + [_event("quit", t0 + 10, "unsubscribe"), _event("new", t0 + 20, "subscribe")]
        + [_event("tie", t0 + 30, "subscribe"), _event("tie", t0 + 30, "unsubscribe")]
        + [_event("late", local_midnight(date(2026, 1, 6), UTC), "subscribe")]
    )
    o.import_followers(["heavy", "quiet", "quit", "tie"], TODAY)
    # End of 2026-01-05: followers heavy, quiet, new (quit left, tie: unsubscribe wins a
    # tie, late subscribes at the next midnight exactly); heavy wrote → 2 silent.
    assert o.served("getupstreammsgdist", "2026-01-05", "2026-01-06", NOW) == [
        {"ref_date": "2026-01-05", "count_interval": 0, "msg_user": 2},
        {"ref_date": "2026-01-05", "count_interval": 1, "msg_user": 1},
        {"ref_date": "2026-01-05", "count_interval": 2, "msg_user": 1},
        {"ref_date": "2026-01-05", "count_interval": 3, "msg_user": 1},
        {"ref_date": "2026-01-06", "count_interval": 0, "msg_user": 4},
    ]
    # Before the account's first record there are no statistics, not even 0 rows.
    assert o.served("getupstreammsgdist", "2026-01-01", "2026-01-04", NOW) == []


def test_worked_example_through_served_list(store: Store) -> None:
    """The same worked example end to end, on both backends."""
    pair = Pair(fresh_appid("wxworked"), OracleAccount(UTC))
    with store.write() as conn:
        add_account(conn, appid=pair.appid, secret="s", tz=UTC, now=STAMP)
    t0 = local_midnight(date(2026, 1, 5), UTC)
    records = (
        [_msg("heavy", t0 + i, "text", 100 + i) for i in range(11)]
        + [_msg("mid", t0 + i, "voice", 200 + i) for i in range(6)]
        + [_msg("light", t0, "link", 300)]
        + [_event("quit", t0 + 10, "unsubscribe"), _event("new", t0 + 20, "subscribe")]
        + [_event("tie", t0 + 30, "subscribe"), _event("tie", t0 + 30, "unsubscribe")]
        + [_event("late", local_midnight(date(2026, 1, 6), UTC), "subscribe")]
    )
    _ingest(store, pair, [records], TODAY)
    _import_followers(store, pair, ["heavy", "quiet", "quit", "tie"], TODAY)
    account = pair.account(store)
    got = served_list(
        store, account, BY_NAME["getupstreammsgdist"], "2026-01-05", "2026-01-06", NOW
    )
    assert got == pair.oracle.served("getupstreammsgdist", "2026-01-05", "2026-01-06", NOW)
    assert [r["msg_user"] for r in got] == [2, 1, 1, 1, 4]
    assert_all_endpoints_agree(store, [pair], {})
