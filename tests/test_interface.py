"""Interface analysis (接口分析): getinterfacesummary[hour] from the relay's timings.

The core property: whatever calls the relay records — across local midnights of two time
zones, in batches, some arriving after their day was rolled up (late data) — the served
rows equal the brute-force oracle (tests/oracle.py), which just sums the recorded calls
per local day and hour. Then the API's rules for these two endpoints: permission set 3
for authorizer tokens, max spans 30 / 1 under both span profiles, the errcodes, the
answer cache voided by late timings, and the CLI and dashboard showing the same numbers.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msgcube.domain.endpoints import BY_NAME
from msgcube.rollup.engine import refresh
from msgcube.rollup.query import served_list
from msgcube.storage.accounts import Account, add_account, get_account, get_account_by_id
from msgcube.storage.db import Store, open_store
from msgcube.storage.rollup_state import read_states
from support.api import at, datacube, get_token, new_account, shanghai
from support.dashboard import YESTERDAY as DASH_YESTERDAY
from support.dashboard import seed_account, truth
from support.relay_calls import Call, record_calls, seed_calls
from support.server import MSGCUBE, msgcube_env, run_msgcube
from test_dashboard import browser, sign_in
from test_platform_flow import Deployment
from test_rollup_oracle import oracle_or_error, served_or_error

from conftest import fresh_appid
from oracle import OracleAccount, local_midnight

DAY_EP, HOUR_EP = BY_NAME["getinterfacesummary"], BY_NAME["getinterfacesummaryhour"]
SHANGHAI, UTC = "Asia/Shanghai", "UTC"
NOW = shanghai(2026, 3, 1, 12)


def stats_generation(conn: Any, account_id: int) -> int:
    account = get_account_by_id(conn, account_id)
    assert account is not None
    return account.stats_gen


TODAY = date(2026, 3, 1)
DATA_DAYS = [date(2026, 1, 25) + timedelta(days=i) for i in range(10)] + [
    date(2026, 2, 27),
    date(2026, 2, 28),
    date(2026, 3, 1),  # today: recorded, not served yet
]


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def db(request: pytest.FixtureRequest) -> Store:
    """The session's database of one backend; every example registers new accounts."""
    name = "sqlite_store" if request.param == "sqlite" else "pg_store"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- the oracle test


@st.composite
def calls(draw: st.DrawFn) -> Call:
    """A relayed push near a local midnight (of either zone) or anywhere in a data day."""
    day = draw(st.sampled_from(DATA_DAYS))
    anchor = draw(st.sampled_from([SHANGHAI, UTC]))
    offset = draw(
        st.one_of(
            st.integers(-90, 90),
            st.sampled_from([-1, 0, 3599, 3600, 86399]),
            st.integers(0, 86399),
        )
    )
    cost = draw(st.one_of(st.integers(0, 5000), st.sampled_from([0, 4500, 2**31 - 1])))
    return local_midnight(day, anchor) + offset, cost, draw(st.booleans())


@dataclass
class Plan:
    tz: str
    early: list[list[Call]]  # recorded, then rolled up
    late: list[list[Call]]  # recorded after that rollup
    late_now_known: bool  # the recorder passed ``now`` (or not: treated as possibly late)
    refresh_again: bool


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    batches = st.lists(st.lists(calls(), max_size=8), max_size=3)
    return Plan(
        tz=draw(st.sampled_from([SHANGHAI, UTC])),
        early=draw(batches),
        late=draw(batches),
        late_now_known=draw(st.booleans()),
        refresh_again=draw(st.booleans()),
    )


def _reload(store: Store, appid: str) -> Account:
    with store.read() as conn:
        account = get_account(conn, appid)
    assert account is not None
    return account


def _requests(extra: tuple[int, int]) -> list[tuple[str, str, str]]:
    day_ranges = [("2026-01-20", "2026-02-18"), ("2026-02-01", "2026-02-28")]
    begin = date(2026, 1, 20) + timedelta(days=extra[0])
    day_ranges.append((begin.isoformat(), (begin + timedelta(days=extra[1])).isoformat()))
    hours = [d.isoformat() for d in DATA_DAYS] + ["2026-01-24", "2026-02-26"]
    return [("getinterfacesummary", b, e) for b, e in day_ranges] + [
        ("getinterfacesummaryhour", d, d) for d in hours
    ]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=plans(), extra=st.tuples(st.integers(0, 45), st.integers(0, 30)))
def test_served_rows_equal_the_sum_of_the_recorded_timings(
    db: Store, plan: Plan, extra: tuple[int, int]
) -> None:
    appid = fresh_appid("wxiface")
    with db.write() as conn:
        add_account(conn, appid=appid, secret="s", tz=plan.tz, now=int(NOW.timestamp()))
    oracle = OracleAccount(plan.tz)
    early_now = int(shanghai(2026, 2, 3, 9).timestamp())
    for batch in plan.early:
        record_calls(db, _reload(db, appid), batch, early_now)
        for received_at, cost, failed in batch:
            oracle.record_call(received_at=received_at, cost_ms=cost, failed=failed)
    refresh(db, _reload(db, appid), date(2026, 2, 3))
    for batch in plan.late:
        now = int(NOW.timestamp()) if plan.late_now_known else None
        record_calls(db, _reload(db, appid), batch, now)
        for received_at, cost, failed in batch:
            oracle.record_call(received_at=received_at, cost_ms=cost, failed=failed)
    if plan.refresh_again:
        refresh(db, _reload(db, appid), TODAY)
    account = _reload(db, appid)
    for name, b, e in _requests(extra):
        got = served_or_error(db, account, name, b, e)
        assert got == oracle_or_error(oracle, name, b, e), (name, b, e, plan.tz)


def test_a_known_example_by_hand(store: Store) -> None:
    """Three calls on 2026-02-10 in Shanghai, one failed, at 09:xx and 10:xx."""
    appid = fresh_appid("wxifhand")
    with store.write() as conn:
        account = add_account(conn, appid=appid, secret="s", tz=SHANGHAI, now=int(NOW.timestamp()))
    nine = int(shanghai(2026, 2, 10, 9, 15).timestamp())
    ten = int(shanghai(2026, 2, 10, 10, 59, 59).timestamp())
    record_calls(store, account, [(nine, 120, False), (nine + 60, 4500, True), (ten, 30, False)])
    account = _reload(store, appid)
    day = "2026-02-10"
    assert served_list(store, account, DAY_EP, day, day, NOW) == [
        {
            "ref_date": day,
            "callback_count": 3,
            "fail_count": 1,
            "total_time_cost": 4650,
            "max_time_cost": 4500,
        },
    ]
    assert served_list(store, account, HOUR_EP, day, day, NOW) == [
        {
            "ref_date": day,
            "ref_hour": 900,
            "callback_count": 2,
            "fail_count": 1,
            "total_time_cost": 4620,
            "max_time_cost": 4500,
        },
        {
            "ref_date": day,
            "ref_hour": 1000,
            "callback_count": 1,
            "fail_count": 0,
            "total_time_cost": 30,
            "max_time_cost": 30,
        },
    ]
    # Days around it had no call: no rows (the account's other days are simply absent).
    assert served_list(store, account, DAY_EP, "2026-02-01", "2026-02-28", NOW) == [
        served_list(store, account, DAY_EP, day, day, NOW)[0]
    ]


def test_recording_marks_the_day_dirty_and_voids_caches_only_for_late_calls(
    store: Store,
) -> None:
    appid = fresh_appid("wxifdirty")
    with store.write() as conn:
        account = add_account(conn, appid=appid, secret="s", tz=SHANGHAI, now=int(NOW.timestamp()))
    # A call at 10:00 recorded one second later: its day has not ended, caches stay.
    at_ten = int(shanghai(2026, 2, 10, 10).timestamp())
    record_calls(store, account, [(at_ten, 50, False)], now=at_ten + 1)
    with store.read() as conn:
        states = read_states(conn, account.id)
        assert stats_generation(conn, account.id) == 0
    assert states == {(DAY_EP.period, date(2026, 2, 10)): (1, 0)}
    # The same day's call recorded the next morning is late: the generation moves.
    next_morning = int(shanghai(2026, 2, 11, 8).timestamp())
    record_calls(store, account, [(at_ten + 5, 70, True)], now=next_morning)
    with store.read() as conn:
        assert stats_generation(conn, account.id) == 1
    # Without ``now`` every batch counts as possibly late.
    record_calls(store, account, [(at_ten + 9, 10, False)])
    with store.read() as conn:
        assert stats_generation(conn, account.id) == 2
        assert read_states(conn, account.id)[(DAY_EP.period, date(2026, 2, 10))] == (3, 0)


# --------------------------------------------------------------------------- the API

T0 = shanghai(2026, 6, 1, 10)
YESTERDAY = date(2026, 5, 31)


async def _post(api: httpx.AsyncClient, name: str, token: str, b: str, e: str) -> Any:
    return await datacube(api, token, name, b, e)


async def test_spans_errcodes_and_an_account_without_upstream(store: Store) -> None:
    appid, bare = fresh_appid("wxifapi"), fresh_appid("wxifbare")
    account = new_account(store, appid, "secret-a")
    new_account(store, bare, "secret-b")
    seed_calls(store, account, YESTERDAY - timedelta(days=40), YESTERDAY, seed=4)
    y = YESTERDAY.isoformat()
    for profile in ("classic", "current"):
        async with at(store, T0, span_profile=profile) as api:
            token = await get_token(api, appid, "secret-a")
            first = (YESTERDAY - timedelta(days=29)).isoformat()
            rows = await _post(api, "getinterfacesummary", token, first, y)
            assert [r["ref_date"] for r in rows["list"]] == [
                (YESTERDAY - timedelta(days=29 - i)).isoformat() for i in range(30)
            ]
            too_long = (YESTERDAY - timedelta(days=30)).isoformat()
            assert (await _post(api, "getinterfacesummary", token, too_long, y))["errcode"] == 61501
            hours = await _post(api, "getinterfacesummaryhour", token, y, y)
            assert {r["ref_date"] for r in hours["list"]} == {y}
            assert (
                sum(r["callback_count"] for r in hours["list"])
                == rows["list"][-1]["callback_count"]
            )
            two_days = (YESTERDAY - timedelta(days=1)).isoformat()
            body = await _post(api, "getinterfacesummaryhour", token, two_days, y)
            assert body["errcode"] == 61501
            assert (await _post(api, "getinterfacesummary", token, "2026-5-30", y))[
                "errcode"
            ] == 61500
            today = T0.date().isoformat()
            assert (await _post(api, "getinterfacesummary", token, y, today))["errcode"] == 61501
            bare_token = await get_token(api, bare, "secret-b")
            assert await _post(api, "getinterfacesummary", bare_token, first, y) == {"list": []}
    async with at(store, T0, ready_at="10:30") as api:
        token = await get_token(api, appid, "secret-a")
        assert (await _post(api, "getinterfacesummary", token, y, y))["errcode"] == 61503
    async with at(store, T0, quota_datacube=1) as api:
        token = await get_token(api, appid, "secret-a")
        assert "list" in await _post(api, "getinterfacesummaryhour", token, y, y)
        assert (await _post(api, "getinterfacesummaryhour", token, y, y))["errcode"] == 45009


async def test_late_timings_void_the_cached_answer(store: Store) -> None:
    appid = fresh_appid("wxifcache")
    account = new_account(store, appid, "secret-c")
    y = YESTERDAY.isoformat()
    noon = int(datetime(2026, 5, 31, 12, tzinfo=T0.tzinfo).timestamp())
    record_calls(store, account, [(noon, 100, False)], now=noon)
    async with at(store, T0) as api:
        token = await get_token(api, appid, "secret-c")
        before = await _post(api, "getinterfacesummary", token, y, y)
        assert before["list"][0]["callback_count"] == 1
        assert await _post(api, "getinterfacesummary", token, y, y) == before  # cached
        # The recorder's batch for yesterday lands this morning (e.g. after an outage).
        record_calls(store, account, [(noon + 1, 900, True)], now=int(T0.timestamp()))
        after = await _post(api, "getinterfacesummary", token, y, y)
    assert after["list"] == [
        {
            "ref_date": y,
            "callback_count": 2,
            "fail_count": 1,
            "total_time_cost": 1000,
            "max_time_cost": 900,
        },
    ]


async def test_authorizer_tokens_need_permission_set_3(store: Store) -> None:
    d = Deployment(store, T0)
    async with d.client:
        component_appid = fresh_appid("wxifcomp")
        created = await d.admin("POST", "/platforms", {"component_appid": component_appid})
        ticket = (await d.admin("GET", f"/platforms/{component_appid}/ticket"))[
            "component_verify_ticket"
        ]
        grant = await d.post(
            "/cgi-bin/component/api_component_token",
            {
                "component_appid": component_appid,
                "component_appsecret": created["component_appsecret"],
                "component_verify_ticket": ticket,
            },
        )
        y = YESTERDAY.isoformat()
        expected = {}
        for funcs in ([1], [3], [1, 3], [2]):
            appid = fresh_appid("wxifauth")
            account = new_account(store, appid, "secret-d")
            seed_calls(store, account, YESTERDAY, YESTERDAY, seed=len(funcs))
            auth = await d.admin(
                "POST",
                "/authorizations",
                {
                    "component_appid": component_appid,
                    "authorizer_appid": appid,
                    "func_info": funcs,
                },
            )
            body = await d.post(
                "/cgi-bin/component/api_authorizer_token",
                {
                    "component_appid": component_appid,
                    "authorizer_appid": appid,
                    "authorizer_refresh_token": auth["authorizer_refresh_token"],
                },
                component_access_token=grant["component_access_token"],
            )
            token = body["authorizer_access_token"]
            got = {}
            for name in ("getinterfacesummary", "getinterfacesummaryhour", "getupstreammsg"):
                answer = await d.post(
                    f"/datacube/{name}", {"begin_date": y, "end_date": y}, access_token=token
                )
                got[name] = "list" if "list" in answer else answer["errcode"]
                if name == "getinterfacesummary" and "list" in answer:
                    expected[tuple(funcs)] = answer["list"]
                if "errcode" in answer:
                    assert answer["errmsg"].startswith("api is unauthorized to component rid: ")
            interface = "list" if 3 in funcs else 61007
            messages = "list" if 1 in funcs else 61007
            assert got == {
                "getinterfacesummary": interface,
                "getinterfacesummaryhour": interface,
                "getupstreammsg": messages,
            }, funcs
    assert all(rows and rows[0]["callback_count"] >= 1 for rows in expected.values())


# --------------------------------------------------------------------------- CLI and dashboard


def test_stats_prints_the_api_rows(tmp_path: Path) -> None:
    db = tmp_path / "msgcube.db"
    env = msgcube_env(db, T0.isoformat())
    appid = fresh_appid("wxifcli")
    run_msgcube("account", "add", "--appid", appid, "--secret", "secret-e", env=env, cwd=tmp_path)
    store = open_store(f"sqlite:///{db}")
    try:
        account = _reload(store, appid)
        seed_calls(store, account, YESTERDAY - timedelta(days=5), YESTERDAY, seed=9)
        first, y = (YESTERDAY - timedelta(days=5)).isoformat(), YESTERDAY.isoformat()
        for name, b in (("getinterfacesummary", first), ("getinterfacesummaryhour", y)):
            rows = orjson.loads(
                run_msgcube("stats", name, "--appid", appid, b, y, env=env, cwd=tmp_path)
            )
            expected = served_list(store, _reload(store, appid), BY_NAME[name], b, y, T0)
            assert rows and rows == expected
        args = ["stats", "getinterfacesummaryhour", "--appid", appid, first, y]
        bad = subprocess.run(
            [MSGCUBE, *args], env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert bad.returncode == 2
        assert orjson.loads(bad.stderr.splitlines()[0])["errcode"] == 61501
    finally:
        store.dispose()


async def test_the_dashboard_panel_shows_the_api_numbers(sqlite_store: Store) -> None:
    appid = fresh_appid("wxifdash")
    account = seed_account(sqlite_store, appid, "secret-f", days=40, users=30, seed=5)
    begin, end = DASH_YESTERDAY - timedelta(days=34), DASH_YESTERDAY
    served = truth(sqlite_store, account, DAY_EP, begin, end)
    assert len(served) >= 30
    for lang in ("zh-CN", "en"):
        async with browser(sqlite_store, lang=lang) as client:
            await sign_in(client, appid, "secret-f")
            page = await client.get("/dashboard", params={"begin": str(begin), "end": str(end)})
        assert page.status_code == 200
        html = page.text
        assert ("接口分析" if lang == "zh-CN" else "Interface analysis") in html
        shown = [
            {
                "ref_date": m[0],
                "callback_count": int(m[1]),
                "fail_count": int(m[2]),
                "total_time_cost": int(m[3]),
                "max_time_cost": int(m[4]),
            }
            for m in re.findall(
                r'<tr data-day="([\d-]+)" data-callback-count="(\d+)"\s+data-fail-count="(\d+)" '
                r'data-total-time-cost="(\d+)"\s+data-max-time-cost="(\d+)">',
                html,
            )
        ]
        assert sorted(shown, key=lambda r: r["ref_date"]) == served
        first = served[-1]  # newest first on the page: its mean and max are printed
        mean = first["total_time_cost"] / first["callback_count"]
        row = html.split(f'data-day="{first["ref_date"]}"', 1)[1].split("</tr>", 1)[0]
        assert f"<td>{mean:,.1f}</td>" in row
        assert f"<td>{first['max_time_cost']:,}</td>" in row
    # An account without relayed pushes says how to get them.
    bare = fresh_appid("wxifdash0")
    seed_account(sqlite_store, bare, "secret-g", days=3, users=5, seed=1, relay=False)
    async with browser(sqlite_store, lang="en") as client:
        await sign_in(client, bare, "secret-g")
        page = await client.get("/dashboard")
    assert 'id="interface-none"' in page.text
    assert f"msgcube account set --appid {bare} --upstream URL" in page.text
    assert 'id="interface-table"' not in page.text
