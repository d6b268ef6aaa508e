"""The contract's date rules: 47001 body shape, 61500 format, 61501 range, 61503 ready_at.

Through ``msgcube.domain.periods`` (``parse_range_body``, ``validate_range``) and, for
what needs data and a clock, through ``served_list`` on both backends.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msgcube.domain.endpoints import BY_NAME, ENDPOINTS, SPAN_PROFILES, Endpoint
from msgcube.domain.messages import parse_record
from msgcube.domain.periods import DateRange, parse_range_body, validate_range
from msgcube.errors import ApiError
from msgcube.ingest.batch import import_followers, write_batch
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account
from msgcube.storage.db import Store
from support.relay_calls import record_calls

from conftest import STAMP, fresh_appid
from oracle import OracleError
from oracle import validate as oracle_validate

CST = timezone(timedelta(hours=8))
TODAY = date(2026, 3, 1)
YESTERDAY = date(2026, 2, 28)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=CST)
EP = BY_NAME["getupstreammsg"]

# The contract's span table, copied by hand: the endpoint table must match it.
SPEC_SPANS = {
    "getupstreammsg": (7, 7),
    "getupstreammsghour": (1, 1),
    "getupstreammsgweek": (30, 1),
    "getupstreammsgmonth": (30, 1),
    "getupstreammsgdist": (15, 15),
    "getupstreammsgdistweek": (30, 15),
    "getupstreammsgdistmonth": (30, 15),
    # Interface analysis: 30 and 1 in both profiles.
    "getinterfacesummary": (30, 30),
    "getinterfacesummaryhour": (1, 1),
}


def _errcode(fn: Any, *args: Any, **kwargs: Any) -> int:
    with pytest.raises(ApiError) as err:
        fn(*args, **kwargs)
    return err.value.errcode


# --------------------------------------------------------------------------- 47001


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        ["2026-01-01", "2026-01-02"],
        "begin_date",
        20260101,
        1.5,
        True,
        b"{}",
        [{"begin_date": "2026-01-01", "end_date": "2026-01-01"}],
    ],
    ids=repr,
)
def test_47001_body_not_an_object(body: Any) -> None:
    assert _errcode(parse_range_body, body) == 47001


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"begin_date": "2026-01-01"},
        {"end_date": "2026-01-01"},
        {"begin": "2026-01-01", "end": "2026-01-01"},
        {"begin_date": 20260101, "end_date": "2026-01-01"},
        {"begin_date": "2026-01-01", "end_date": 20260101},
        {"begin_date": None, "end_date": "2026-01-01"},
        {"begin_date": "2026-01-01", "end_date": None},
        {"begin_date": ["2026-01-01"], "end_date": "2026-01-01"},
        {"begin_date": {"d": 1}, "end_date": "2026-01-01"},
        {"begin_date": True, "end_date": "2026-01-01"},
        {"begin_date": "2026-01-01", "end_date": 1.0},
    ],
    ids=repr,
)
def test_47001_dates_missing_or_not_strings(body: Any) -> None:
    assert _errcode(parse_range_body, body) == 47001


def test_well_formed_body_returns_the_two_strings_unchanged() -> None:
    body = {"begin_date": "2026-02-30", "end_date": " x", "extra": 1}
    assert parse_range_body(body) == ("2026-02-30", " x")  # format is checked later (61500)


# --------------------------------------------------------------------------- 61500

BAD_DATES = [
    "2026-1-05",
    "2026-01-5",
    "2026-02-30",
    "2025-02-29",
    "2026-13-01",
    "2026-00-10",
    "2026-01-00",
    "2026-01-32",
    " 2026-01-01",
    "2026-01-01 ",
    "2026-01-01\n",
    "\t2026-01-01",
    "2026/01/01",
    "20260101",
    "2026.01.01",
    "2026-01-01T00:00:00",
    "2026-01-01Z",
    "",
    "26-01-01",
    "02026-01-01",
    "+2026-01-01",
    "2026_01_01",
    "yyyy-mm-dd",
    "２０２６-01-01",  # fullwidth digits
    "٢٠٢٦-٠١-٠١",  # Arabic-Indic digits
    "0000-01-01",
]


@pytest.mark.parametrize("bad", BAD_DATES, ids=repr)
def test_61500_bad_begin_date(bad: str) -> None:
    assert _errcode(validate_range, EP, bad, "2026-01-01", TODAY) == 61500


@pytest.mark.parametrize("bad", BAD_DATES, ids=repr)
def test_61500_bad_end_date(bad: str) -> None:
    assert _errcode(validate_range, EP, "2026-01-01", bad, TODAY) == 61500


def test_61500_wins_over_61501() -> None:
    # begin > end, end in the future, span exceeded — but a date is malformed first.
    assert _errcode(validate_range, EP, "2026-02-30", "2026-01-01", TODAY) == 61500
    assert _errcode(validate_range, EP, "2026-01-01", "2027-02-30", TODAY) == 61500
    assert _errcode(validate_range, EP, "2099-12-31", "2026/01/01", TODAY) == 61500


def test_leap_day_is_a_date() -> None:
    assert validate_range(EP, "2024-02-29", "2024-02-29", TODAY) == DateRange(
        date(2024, 2, 29), date(2024, 2, 29)
    )


# --------------------------------------------------------------------------- 61501


def test_61501_begin_after_end() -> None:
    assert _errcode(validate_range, EP, "2026-01-02", "2026-01-01", TODAY) == 61501


@pytest.mark.parametrize("end", [TODAY, TODAY + timedelta(days=1), date(2030, 1, 1)])
def test_61501_end_not_before_today(end: date) -> None:
    assert _errcode(validate_range, EP, end.isoformat(), end.isoformat(), TODAY) == 61501


def test_yesterday_is_the_last_valid_end() -> None:
    assert validate_range(EP, "2026-02-28", "2026-02-28", TODAY).days == 1


def test_endpoint_table_matches_the_spec() -> None:
    assert {e.name: (e.span_classic, e.span_current) for e in ENDPOINTS} == SPEC_SPANS
    assert SPAN_PROFILES == ("classic", "current")


@pytest.mark.parametrize("profile", SPAN_PROFILES)
@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_span_boundary(ep: Endpoint, profile: str) -> None:
    """``end - begin`` must be *less than* the span: span days allowed, span + 1 not."""
    span = SPEC_SPANS[ep.name][0 if profile == "classic" else 1]
    for end in (YESTERDAY, date(2026, 1, 31), date(2025, 12, 31)):
        ok = end - timedelta(days=span - 1)
        rng = validate_range(ep, ok.isoformat(), end.isoformat(), TODAY, profile)
        assert rng.days == span
        too_far = end - timedelta(days=span)
        assert (
            _errcode(validate_range, ep, too_far.isoformat(), end.isoformat(), TODAY, profile)
            == 61501
        )


def test_classic_is_the_default_profile() -> None:
    week = BY_NAME["getupstreammsgweek"]
    assert validate_range(week, "2026-01-01", "2026-01-30", TODAY).days == 30
    assert _errcode(validate_range, week, "2026-01-01", "2026-01-02", TODAY, "current") == 61501


@settings(max_examples=300, deadline=None)
@given(
    ep=st.sampled_from(ENDPOINTS),
    profile=st.sampled_from(SPAN_PROFILES),
    begin=st.dates(date(2013, 1, 1), date(2026, 3, 10)),
    length=st.integers(-3, 35),
)
def test_validate_range_agrees_with_the_oracle(
    ep: Endpoint, profile: str, begin: date, length: int
) -> None:
    end = begin + timedelta(days=length)
    b, e = begin.isoformat(), end.isoformat()
    try:
        want: Any = oracle_validate(ep.name, b, e, TODAY, profile)
    except OracleError as exc:
        want = exc.errcode
    try:
        rng = validate_range(ep, b, e, TODAY, profile)
        got: Any = (rng.begin, rng.end)
    except ApiError as exc:
        got = exc.errcode
    assert got == want


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet="0123456789-/ ０١T", max_size=12) | st.text(max_size=12))
def test_date_format_agrees_with_the_oracle(text: str) -> None:
    try:
        oracle_validate("getupstreammsg", text, text, date(9999, 1, 1), "classic")
        want = 0
    except OracleError as exc:
        want = exc.errcode
    try:
        validate_range(EP, text, text, date(9999, 1, 1))
        got = 0
    except ApiError as exc:
        got = exc.errcode
    assert got == want, repr(text)


# --------------------------------------------------------------------------- via served_list


def _new_account(store: Store, tz: str = "Asia/Shanghai") -> str:
    appid = fresh_appid("wxdates")
    with store.write() as conn:
        add_account(conn, appid=appid, secret="s", tz=tz, now=STAMP)
    return appid


def _read(store: Store, appid: str) -> Account:
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    return account


def _store_messages(
    store: Store, appid: str, days: list[date], *, hour: int = 12, today: date = TODAY
) -> None:
    account = _read(store, appid)
    records = []
    for i, d in enumerate(days):
        t = int(datetime(d.year, d.month, d.day, hour, tzinfo=CST).timestamp())
        records.append(
            {"FromUserName": f"u{i % 2}", "CreateTime": t, "MsgType": "text", "MsgId": 9000 + i}
        )
    with store.write() as conn:
        write_batch(conn, account, [parse_record(r) for r in records], today, received_at=STAMP)


def test_served_list_validates_before_anything_else(store: Store) -> None:
    account = _read(store, _new_account(store))
    assert _errcode(served_list, store, account, EP, "2026-1-05", "2026-01-06", NOW) == 61500
    assert _errcode(served_list, store, account, EP, "2026-01-06", "2026-01-05", NOW) == 61501
    assert _errcode(served_list, store, account, EP, "2026-03-01", "2026-03-01", NOW) == 61501
    assert _errcode(served_list, store, account, EP, "2026-02-01", "2026-02-08", NOW) == 61501
    assert served_list(store, account, EP, "2026-02-01", "2026-02-07", NOW) == []
    week = BY_NAME["getupstreammsgweek"]
    assert served_list(store, account, week, "2026-01-01", "2026-01-30", NOW) == []
    assert (
        _errcode(
            served_list,
            store,
            account,
            week,
            "2026-01-01",
            "2026-01-30",
            NOW,
            span_profile="current",
        )
        == 61501
    )


def test_today_follows_the_account_time_zone(store: Store) -> None:
    """At 2026-03-01 06:00 in Shanghai it is still 02-28 in UTC: 02-28 is "today" there."""
    early = datetime(2026, 3, 1, 6, 0, tzinfo=CST)
    utc = _read(store, _new_account(store, "UTC"))
    cst = _read(store, _new_account(store, "Asia/Shanghai"))
    assert served_list(store, cst, EP, "2026-02-28", "2026-02-28", early) == []
    assert _errcode(served_list, store, utc, EP, "2026-02-28", "2026-02-28", early) == 61501


@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda e: e.name)
def test_dates_before_2014_12_01_are_accepted_and_empty(store: Store, ep: Endpoint) -> None:
    """The account's data starts on 2014-12-01 (a Monday and a 1st) and it has a follower
    base, so count_interval 0 rows exist from that day on — but nothing before it."""
    now = datetime(2015, 1, 20, 12, 0, tzinfo=CST)  # keeps the follower rollup short
    appid = _new_account(store)
    _store_messages(
        store, appid, [date(2014, 12, 1), date(2014, 12, 2), date(2015, 1, 5)], today=now.date()
    )
    with store.write() as conn:
        import_followers(conn, _read(store, appid), ["u0", "fan"], now.date())
    # A relayed push on the first day, for the interface endpoints.
    first_noon = int(datetime(2014, 12, 1, 12, 0, tzinfo=CST).timestamp())
    record_calls(store, _read(store, appid), [(first_noon, 100, False)])
    account = _read(store, appid)
    refresh(store, account, now.date())
    span = ep.max_span("classic")
    for end in (date(2014, 11, 30), date(2014, 1, 1), date(1970, 1, 1), date(1, 2, 15)):
        begin = end - timedelta(days=span - 1)
        assert served_list(store, account, ep, begin.isoformat(), end.isoformat(), now) == []
    # ...while the first day, where every kind of period starts, has rows.
    assert served_list(store, account, ep, "2014-12-01", "2014-12-01", now), ep.name


def test_dates_before_2014_12_01_are_empty_even_for_pushes_dated_earlier(store: Store) -> None:
    """The contract: "there is no data before that day" (``periods.DATA_FLOOR``).

    A bulk import may carry a CreateTime from before WeChat's statistics existed (a
    broken clock, a test fixture); dates before 2014-12-01 must still answer [].
    """
    appid = _new_account(store)
    _store_messages(store, appid, [date(2014, 11, 30), date(2014, 12, 1)])
    account = _read(store, appid)
    assert served_list(store, account, EP, "2014-11-24", "2014-11-30", NOW) == []
    assert (
        served_list(store, account, BY_NAME["getupstreammsgmonth"], "2014-11-01", "2014-11-01", NOW)
        == []
    )
    assert [
        r["ref_date"] for r in served_list(store, account, EP, "2014-11-30", "2014-12-01", NOW)
    ] == ["2014-12-01"]


# --------------------------------------------------------------------------- 61503 ready_at

EIGHT = time(8, 0)


def _ready_account(store: Store, tz: str = "Asia/Shanghai") -> Account:
    appid = _new_account(store, tz)
    _store_messages(store, appid, [date(2026, 2, 20), date(2026, 2, 27), date(2026, 2, 28)])
    return _read(store, appid)


@pytest.mark.parametrize(
    ("name", "begin", "end"),
    [
        ("getupstreammsg", "2026-02-22", "2026-02-28"),
        ("getupstreammsghour", "2026-02-28", "2026-02-28"),
        ("getupstreammsgdist", "2026-02-20", "2026-02-28"),
        ("getupstreammsgmonth", "2026-02-01", "2026-02-28"),  # February ended yesterday
        ("getupstreammsgdistmonth", "2026-02-01", "2026-02-01"),
    ],
)
def test_61503_yesterday_before_ready_at(store: Store, name: str, begin: str, end: str) -> None:
    account = _ready_account(store)
    ep = BY_NAME[name]
    before = datetime(2026, 3, 1, 7, 59, 59, tzinfo=CST)
    assert _errcode(served_list, store, account, ep, begin, end, before, ready_at=EIGHT) == 61503
    at = datetime(2026, 3, 1, 8, 0, tzinfo=CST)
    assert served_list(store, account, ep, begin, end, at, ready_at=EIGHT) != []
    # The default ready_at is midnight: yesterday is served as soon as it has ended.
    midnight = datetime(2026, 3, 1, 0, 0, tzinfo=CST)
    assert served_list(store, account, ep, begin, end, midnight) != []


@pytest.mark.parametrize(
    ("name", "begin", "end"),
    [
        ("getupstreammsg", "2026-02-21", "2026-02-27"),
        ("getupstreammsghour", "2026-02-27", "2026-02-27"),
        ("getupstreammsgweek", "2026-02-16", "2026-02-28"),  # week 02-16 ended 02-22
        ("getupstreammsgdistweek", "2026-02-01", "2026-02-28"),
    ],
)
def test_older_days_are_ready_before_ready_at(
    store: Store, name: str, begin: str, end: str
) -> None:
    account = _ready_account(store)
    before = datetime(2026, 3, 1, 7, 59, tzinfo=CST)
    rows = served_list(store, account, BY_NAME[name], begin, end, before, ready_at=EIGHT)
    assert rows != []
    assert all(r["ref_date"] < "2026-02-28" for r in rows)


def test_ready_at_is_local_time_of_the_account(store: Store) -> None:
    """07:59 in Shanghai is 23:59 the day before in UTC: for a UTC account "yesterday" is
    then 02-27, and it is long past 08:00 there."""
    account = _ready_account(store, "UTC")
    before = datetime(2026, 3, 1, 7, 59, tzinfo=CST)  # 2026-02-28 23:59 UTC
    rows = served_list(store, account, EP, "2026-02-27", "2026-02-27", before, ready_at=EIGHT)
    assert rows != []
    early_utc = datetime(2026, 2, 28, 7, 59, tzinfo=UTC)
    assert (
        _errcode(
            served_list, store, account, EP, "2026-02-27", "2026-02-27", early_utc, ready_at=EIGHT
        )
        == 61503
    )
