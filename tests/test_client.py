"""msgcube.client against a fake WeChat (httpx.MockTransport): requests, windows, retries.

The fake (``test_client_fake_wechat.FakeWeChat``) implements WeChat's documented
behaviour; nothing of msgcube's own code is mocked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import pickle
import random
import stat
import sys
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from msgcube.client import (
    DEFAULT_BASE_URL,
    AsyncClient,
    Backoff,
    CallableTokenProvider,
    Client,
    CredentialTokenProvider,
    DataNotReady,
    DateFormatError,
    DateRangeError,
    FileTokenCache,
    InvalidAppSecret,
    InvalidCredential,
    MemoryTokenCache,
    NetworkError,
    QuotaExceeded,
    RedisTokenCache,
    ResponseError,
    StaticTokenProvider,
    SystemBusy,
    TokenExpired,
    Unauthorized,
    WeChatError,
    method_name,
)
from msgcube.client.errors import parse_rid, strip_request_ids
from msgcube.domain.endpoints import BY_NAME, ENDPOINTS
from test_client_fake_wechat import (
    APPID,
    SECRET,
    FakeClock,
    FakeWeChat,
    now_shanghai,
)

YEAR = (date(2025, 1, 1), date(2025, 12, 31))


class Sleeps:
    """A ``sleep`` seam that records instead of waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def make_client(fake: FakeWeChat, **kwargs: Any) -> Client:
    kwargs.setdefault("token_cache", MemoryTokenCache())
    kwargs.setdefault("clock", now_shanghai)
    kwargs.setdefault("sleep", Sleeps())
    return Client(APPID, SECRET, transport=fake.transport(), **kwargs)


@pytest.fixture
def fake() -> FakeWeChat:
    return FakeWeChat()


def body_of(request: httpx.Request) -> Any:
    return orjson.loads(request.content)


# ------------------------------------------------------------------- request format


def test_requests_are_exactly_what_wechat_documents(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        rows = client.get_upstream_msg("2025-12-01", date(2025, 12, 7))
    token_req, data_req = fake.requests
    assert token_req.method == "POST"
    assert str(token_req.url) == "https://api.weixin.qq.com/cgi-bin/stable_token"
    assert body_of(token_req) == {
        "grant_type": "client_credential",
        "appid": APPID,
        "secret": SECRET,
        "force_refresh": False,
    }
    token = fake.stable[APPID]
    assert data_req.method == "POST"
    assert str(data_req.url) == (
        f"https://api.weixin.qq.com/datacube/getupstreammsg?access_token={token}"
    )
    assert data_req.headers["content-type"] == "application/json"
    assert data_req.content == b'{"begin_date":"2025-12-01","end_date":"2025-12-07"}'
    assert rows == fake.expected(BY_NAME["getupstreammsg"], date(2025, 12, 1), date(2025, 12, 7))
    assert rows[0] == {
        "ref_date": "2025-12-01",
        "msg_type": rows[0]["msg_type"],
        "msg_user": rows[0]["msg_user"],
        "msg_count": rows[0]["msg_count"],
    }


def test_classic_token_endpoint_is_a_get_with_query_parameters(fake: FakeWeChat) -> None:
    with make_client(fake, token_api="token") as client:
        client.get_upstream_msg_hour("2025-12-01", "2025-12-01")
    token_req = fake.requests[0]
    assert token_req.method == "GET"
    assert str(token_req.url) == (
        f"https://api.weixin.qq.com/cgi-bin/token?grant_type=client_credential"
        f"&appid={APPID}&secret={SECRET}"
    )
    assert fake.datacube_requests()[0].url.params["access_token"] == fake.classic[APPID]


def test_one_method_per_endpoint_named_after_wechats_cloud_names(fake: FakeWeChat) -> None:
    # The public API, locked: renaming an endpoint must be a conscious change.
    assert [method_name(ep) for ep in ENDPOINTS] == [
        "get_upstream_msg",
        "get_upstream_msg_hour",
        "get_upstream_msg_week",
        "get_upstream_msg_month",
        "get_upstream_msg_dist",
        "get_upstream_msg_dist_week",
        "get_upstream_msg_dist_month",
        "get_interface_summary",
        "get_interface_summary_hour",
    ]
    with make_client(fake) as client:
        for ep in ENDPOINTS:
            rows = getattr(client, method_name(ep))("2025-11-01", "2025-11-03")
            assert fake.requests[-1].url.path == f"/datacube/{ep.name}"
            assert rows == fake.expected(ep, date(2025, 11, 1), date(2025, 11, 3))
            assert len(rows) > 0
            assert all(list(row) == list(ep.fields) for row in rows)
    doc = getattr(Client, "get_upstream_msg_hour").__doc__  # noqa: B009 - generated
    assert "/datacube/getupstreammsghour" in doc


def test_base_url_with_a_path_prefix(fake: FakeWeChat) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        inner = httpx.Request(
            request.method,
            str(request.url).replace("/proxy/wechat", ""),
            headers=request.headers,
            content=request.content,
        )
        return fake(inner)

    with Client(
        APPID,
        SECRET,
        base_url="https://gateway.example/proxy/wechat/",
        transport=httpx.MockTransport(handler),
        token_cache=MemoryTokenCache(),
        clock=now_shanghai,
    ) as client:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert seen == ["/proxy/wechat/cgi-bin/stable_token", "/proxy/wechat/datacube/getupstreammsg"]


def test_bad_dates_fail_before_any_call(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            client.get_upstream_msg("2025-1-01", "2025-01-02")
        with pytest.raises(ValueError, match="after"):
            client.get_upstream_msg("2025-01-03", "2025-01-02")
        with pytest.raises(KeyError, match="getupstreammsgdist"):
            client.fetch("getupstreammsgday", "2025-01-01", "2025-01-02")
    assert fake.requests == []


def test_default_base_url_is_wechat() -> None:
    assert DEFAULT_BASE_URL == "https://api.weixin.qq.com"
    with Client(token="t") as client:
        assert client.base_url == "https://api.weixin.qq.com"


# --------------------------------------------------------------------- windows


MIN_CALLS = {
    "classic": {
        "getupstreammsg": 53,  # ceil(365 / 7)
        "getupstreammsghour": 365,
        "getupstreammsgweek": 11,  # 52 Mondays, five per 30-day window
        "getupstreammsgmonth": 11,  # 12 months; Feb 1 and Mar 1 are 28 days apart
        "getupstreammsgdist": 25,  # ceil(365 / 15)
        "getupstreammsgdistweek": 11,
        "getupstreammsgdistmonth": 11,
        "getinterfacesummary": 13,  # ceil(365 / 30)
        "getinterfacesummaryhour": 365,
    },
    "current": {
        "getupstreammsg": 53,
        "getupstreammsghour": 365,
        "getupstreammsgweek": 52,
        "getupstreammsgmonth": 12,
        "getupstreammsgdist": 25,
        "getupstreammsgdistweek": 18,  # three Mondays per 15-day window
        "getupstreammsgdistmonth": 12,
        "getinterfacesummary": 13,
        "getinterfacesummaryhour": 365,
    },
}


@pytest.mark.parametrize("profile", ["classic", "current"])
@pytest.mark.parametrize("ep", ENDPOINTS, ids=lambda ep: ep.name)
def test_a_year_takes_the_minimum_number_of_calls(profile: str, ep: Any) -> None:
    fake = FakeWeChat(profile=profile)
    with make_client(fake, span_profile=profile) as client:
        rows = client.fetch(ep.name, *YEAR)
    assert rows == fake.expected(ep, *YEAR)  # nothing lost, nothing doubled, WeChat's order
    assert len(rows) > 0
    assert fake.calls[ep.name] == MIN_CALLS[profile][ep.name]
    assert client.calls[ep.path] == MIN_CALLS[profile][ep.name]
    requests = fake.datacube_requests(ep.name)
    spans = [
        (date.fromisoformat(body_of(r)["begin_date"]), body_of(r)["end_date"]) for r in requests
    ]
    if ep.label_period.value == "week":
        assert all(begin.weekday() == 0 for begin, _ in spans)
    if ep.label_period.value == "month":
        assert all(begin.day == 1 for begin, _ in spans)


def test_day_windows_tile_the_range_without_gaps(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        client.get_upstream_msg_dist(*YEAR)
    ranges = [
        (date.fromisoformat(body_of(r)["begin_date"]), date.fromisoformat(body_of(r)["end_date"]))
        for r in fake.datacube_requests()
    ]
    assert ranges[0][0] == YEAR[0]
    assert ranges[-1][1] == YEAR[1]
    for (_, end), (begin, _) in itertools.pairwise(ranges):
        assert begin == end + timedelta(days=1)
    assert all((end - begin).days == 14 for begin, end in ranges[:-1])


def test_end_is_capped_at_yesterday_and_unended_periods_are_not_asked(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        rows = client.get_upstream_msg("2026-01-01", "2026-03-01")
        weeks = client.get_upstream_msg_week("2026-01-05", "2026-02-01")
        month = client.get_upstream_msg_month("2026-01-01", "2026-01-31")
    assert [body_of(r) for r in fake.datacube_requests("getupstreammsg")] == [
        {"begin_date": "2026-01-01", "end_date": "2026-01-07"},
        {"begin_date": "2026-01-08", "end_date": "2026-01-09"},
    ]
    assert rows[-1]["ref_date"] == "2026-01-09"
    assert weeks == [] and month == []
    assert fake.calls["getupstreammsgweek"] == fake.calls["getupstreammsgmonth"] == 0


def test_yesterday_depends_on_the_account_time_zone(fake: FakeWeChat) -> None:
    from datetime import UTC, datetime

    # 2026-01-09 20:00 UTC is already the 10th in Shanghai but still the 9th in London.
    def clock() -> datetime:
        return datetime(2026, 1, 9, 20, tzinfo=UTC)

    with make_client(fake, clock=clock) as shanghai:
        assert shanghai.today() == date(2026, 1, 10)
    with make_client(fake, clock=clock, tz="Europe/London") as london:
        assert london.today() == date(2026, 1, 9)
        assert london.windows("getupstreammsg", "2026-01-01", "2026-01-31")[-1].end == date(
            2026, 1, 8
        )


def test_dates_before_the_2014_floor_are_not_asked(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        client.get_upstream_msg("2014-01-01", "2014-12-03")
    assert [body_of(r) for r in fake.datacube_requests()] == [
        {"begin_date": "2014-12-01", "end_date": "2014-12-03"}
    ]


def test_week_rows_are_returned_when_their_monday_is_in_range(fake: FakeWeChat) -> None:
    ep = BY_NAME["getupstreammsgweek"]
    with make_client(fake) as client:
        rows = client.get_upstream_msg_week("2025-11-05", "2025-11-20")  # Wed .. Thu
    assert {r["ref_date"] for r in rows} == {"2025-11-10", "2025-11-17"}
    assert rows == fake.expected(ep, date(2025, 11, 5), date(2025, 11, 20))


# -------------------------------------------------------------------- async client


def test_async_client_fetches_windows_concurrently_bounded_and_merges_in_order() -> None:
    in_flight = 0
    peak = 0
    fake = FakeWeChat()
    token = fake._issue(APPID)

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(random.uniform(0, 0.01))  # finish out of order
        in_flight -= 1
        return fake(request)

    async def main() -> list[dict[str, Any]]:
        async with AsyncClient(
            token=token, transport=httpx.MockTransport(handler), clock=now_shanghai, concurrency=4
        ) as client:
            return await client.get_upstream_msg_hour("2025-12-01", "2025-12-31")

    rows = asyncio.run(main())
    assert rows == fake.expected(
        BY_NAME["getupstreammsghour"], date(2025, 12, 1), date(2025, 12, 31)
    )
    assert fake.calls["getupstreammsghour"] == 31
    assert peak == 4


def test_async_client_with_credentials_and_typed_errors(tmp_path: Path) -> None:
    fake = FakeWeChat()
    fake.quota["getupstreammsgdist"] = 3

    async def main() -> None:
        async with AsyncClient(
            APPID,
            SECRET,
            transport=fake.transport(),
            token_cache=FileTokenCache(tmp_path),
            clock=now_shanghai,
        ) as client:
            rows = await client.get_upstream_msg(*YEAR)
            assert rows == fake.expected(BY_NAME["getupstreammsg"], *YEAR)
            with pytest.raises(QuotaExceeded, match="/datacube/getupstreammsgdist"):
                await client.get_upstream_msg_dist(*YEAR)

    asyncio.run(main())
    assert fake.calls["getupstreammsg"] == 53
    assert fake.token_calls["/cgi-bin/stable_token"] == 1


def test_async_client_backs_off_with_its_own_sleep() -> None:
    fake = FakeWeChat()
    fake.script["getupstreammsg"] = [-1, -1]
    delays: list[float] = []

    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    async def main() -> list[dict[str, Any]]:
        async with AsyncClient(
            token=fake._issue(APPID), transport=fake.transport(), clock=now_shanghai, sleep=sleep
        ) as client:
            return await client.get_upstream_msg("2025-12-01", "2025-12-01")

    assert asyncio.run(main()) == fake.expected(
        BY_NAME["getupstreammsg"], date(2025, 12, 1), date(2025, 12, 1)
    )
    assert len(delays) == 2


def test_async_token_provider_coroutine_function() -> None:
    fake = FakeWeChat()
    tokens = [fake._issue(APPID)]

    async def authorizer_token() -> str:
        return tokens[-1]

    async def main() -> int:
        async with AsyncClient(
            token=authorizer_token, transport=fake.transport(), clock=now_shanghai
        ) as client:
            return len(await client.get_upstream_msg_month(*YEAR))

    assert asyncio.run(main()) == len(fake.expected(BY_NAME["getupstreammsgmonth"], *YEAR))


# ------------------------------------------------------------------- token retries


def test_superseded_token_is_replaced_once_and_the_call_succeeds(fake: FakeWeChat) -> None:
    with make_client(fake) as client:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
        fake.rotate_stable()  # someone force-refreshed: our token now answers 40001
        rows = client.get_upstream_msg("2025-12-02", "2025-12-02")
    assert rows == fake.expected(BY_NAME["getupstreammsg"], date(2025, 12, 2), date(2025, 12, 2))
    assert fake.token_calls["/cgi-bin/stable_token"] == 2
    assert fake.forced_refreshes == 0  # a normal fetch already gave a new token
    assert fake.calls["getupstreammsg"] == 2  # the rejected call is not counted by the fake


def test_persistent_40001_is_retried_a_bounded_number_of_times(fake: FakeWeChat) -> None:
    fake.always["getupstreammsg"] = 40001
    with make_client(fake, token_retries=2) as client, pytest.raises(InvalidCredential) as info:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.calls["getupstreammsg"] == 3  # the first try + 2 retries, then give up
    # Each retry: a normal stable_token call returns the same token (WeChat still thinks it
    # valid), so the client forces a refresh — at most once per retry.
    assert fake.token_calls["/cgi-bin/stable_token"] == 1 + 2 * 2
    assert fake.forced_refreshes == 2
    assert info.value.errcode == 40001
    assert info.value.rid == fake.rids[-1]
    assert info.value.api == "/datacube/getupstreammsg"


def test_42001_gets_a_fresh_token(fake: FakeWeChat) -> None:
    fake.script["getupstreammsg"] = [42001]
    with make_client(fake) as client:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.calls["getupstreammsg"] == 2
    assert fake.forced_refreshes == 1


def test_zero_token_retries_fails_at_once(fake: FakeWeChat) -> None:
    fake.script["getupstreammsg"] = [42001]
    with make_client(fake, token_retries=0) as client, pytest.raises(TokenExpired):
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.calls["getupstreammsg"] == 1


def test_a_static_token_that_is_rejected_is_not_retried(fake: FakeWeChat) -> None:
    client = Client(token="not-a-token", transport=fake.transport(), clock=now_shanghai)
    with client, pytest.raises(InvalidCredential):
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert len(fake.datacube_requests()) == 1
    assert repr(StaticTokenProvider("secret-token")) == "StaticTokenProvider(<token>)"


def test_third_party_authorizer_token_callable_is_refreshed_on_rejection(
    fake: FakeWeChat,
) -> None:
    tokens = ["revoked-authorizer-token"]
    rejected: list[str] = []

    def on_invalid(token: str) -> None:
        rejected.append(token)
        tokens.append(fake._issue(APPID))  # the platform's api_authorizer_token call

    provider = CallableTokenProvider(lambda: tokens[-1], on_invalid)
    with Client(token=provider, transport=fake.transport(), clock=now_shanghai) as client:
        rows = client.get_upstream_msg_dist("2025-12-01", "2025-12-15")
    assert rejected == ["revoked-authorizer-token"]
    assert len(rows) > 0
    assert [r.url.params["access_token"] for r in fake.datacube_requests()] == [
        "revoked-authorizer-token",
        tokens[-1],
    ]


def test_token_is_refreshed_before_it_expires() -> None:
    clock = FakeClock()
    fake = FakeWeChat(clock=clock)
    provider = CredentialTokenProvider(
        APPID, SECRET, transport=fake.transport(), cache=MemoryTokenCache(), clock=clock
    )
    first = provider.get_token()
    clock.advance(7200 - 301)
    assert provider.get_token() == first  # more than 5 minutes left: keep it
    clock.advance(2)
    second = provider.get_token()
    assert second != first  # within the last 5 minutes: WeChat hands out the next one
    assert fake.token_calls["/cgi-bin/stable_token"] == 2
    provider.close()


# ------------------------------------------------------------------- -1 and backoff


def test_system_busy_is_retried_with_bounded_jittered_backoff(fake: FakeWeChat) -> None:
    fake.always["*"] = -1
    sleeps = Sleeps()
    backoff = Backoff(retries=3, base=0.5, cap=1.5)
    client = make_client(fake, sleep=sleeps, backoff=backoff)
    with client, pytest.raises(SystemBusy) as info:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.calls["getupstreammsg"] == 4  # 1 + 3 retries, then give up
    assert len(sleeps.delays) == 3
    for delay, ceiling in zip(sleeps.delays, [0.5, 1.0, 1.5], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert info.value.rid == fake.rids[-1]


def test_intermittent_system_busy_recovers(fake: FakeWeChat) -> None:
    fake.script["getupstreammsg"] = [-1, -1]
    sleeps = Sleeps()
    with make_client(fake, sleep=sleeps) as client:
        rows = client.get_upstream_msg(*YEAR)
    assert rows == fake.expected(BY_NAME["getupstreammsg"], *YEAR)
    assert len(sleeps.delays) == 2
    assert fake.calls["getupstreammsg"] == 53 + 2


def test_token_endpoint_system_busy_is_retried_too(fake: FakeWeChat) -> None:
    answers = [-1]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/cgi-bin/stable_token" and answers:
            return httpx.Response(200, json={"errcode": answers.pop(), "errmsg": "system error"})
        return fake(request)

    sleeps = Sleeps()
    with Client(
        APPID,
        SECRET,
        transport=httpx.MockTransport(handler),
        token_cache=MemoryTokenCache(),
        clock=now_shanghai,
        sleep=sleeps,
    ) as client:
        assert len(client.get_upstream_msg("2025-12-01", "2025-12-01")) > 0
    assert len(sleeps.delays) == 1
    assert fake.token_calls["/cgi-bin/stable_token"] == 1


def test_backoff_is_exponential_and_capped() -> None:
    backoff = Backoff(retries=10, base=0.5, cap=8.0)
    assert [backoff.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    rng = random.Random(1)
    delays = [backoff.delay(n, rng) for n in range(6)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, [0.5, 1, 2, 4, 8, 8], strict=True))


def test_transport_failures_and_gateway_errors_are_retried(fake: FakeWeChat) -> None:
    failures: list[Exception | int] = [httpx.ConnectError("connection refused"), 502]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/datacube/") and failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return httpx.Response(failure, text="bad gateway")
        return fake(request)

    sleeps = Sleeps()
    with Client(
        APPID,
        SECRET,
        transport=httpx.MockTransport(handler),
        token_cache=MemoryTokenCache(),
        clock=now_shanghai,
        sleep=sleeps,
    ) as client:
        rows = client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert len(rows) > 0
    assert len(sleeps.delays) == 2


def test_a_wrong_path_is_a_response_error_without_the_token() -> None:
    fake = FakeWeChat()
    token = fake._issue(APPID)
    with (
        Client(
            token=token, base_url="https://api.weixin.qq.com/cgi-bin", transport=fake.transport()
        ) as client,
        pytest.raises(ResponseError) as info,
    ):
        client.call("getupstreammsg", "2025-12-01", "2025-12-01")
    assert info.value.status == 404
    assert token not in str(info.value)
    assert len(fake.datacube_requests()) == 0  # 404s are not retried


def test_network_error_message_has_no_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    with (
        Client(
            token="SECRET-TOKEN",
            transport=httpx.MockTransport(handler),
            sleep=Sleeps(),
            backoff=Backoff(retries=1),
        ) as client,
        pytest.raises(NetworkError) as info,
    ):
        client.call("getupstreammsg", "2025-12-01", "2025-12-01")
    assert "SECRET-TOKEN" not in str(info.value)
    assert "/datacube/getupstreammsg" in str(info.value)


# ----------------------------------------------------------------------- typed errors


@pytest.mark.parametrize(
    ("errcode", "cls"),
    [
        (45009, QuotaExceeded),
        (48001, Unauthorized),
        (61007, Unauthorized),
        (61500, DateFormatError),
        (61501, DateRangeError),
        (61503, DataNotReady),
    ],
)
def test_datacube_errcodes_raise_typed_errors_with_rid(
    fake: FakeWeChat, errcode: int, cls: type[WeChatError]
) -> None:
    fake.script["getupstreammsghour"] = [errcode]
    with make_client(fake) as client, pytest.raises(cls) as info:
        client.get_upstream_msg_hour("2025-12-01", "2025-12-01")
    error = info.value
    assert type(error) is cls
    assert error.errcode == errcode
    assert error.rid == fake.rids[-1]
    assert error.errmsg.endswith(f" rid: {fake.rids[-1]}")
    assert error.api == "/datacube/getupstreammsghour"
    assert f"[rid: {fake.rids[-1]}]" in str(error)
    assert fake.calls["getupstreammsghour"] == 1  # final errors are not retried


def test_quota_error_names_the_api(fake: FakeWeChat) -> None:
    fake.quota["getupstreammsghour"] = 2
    with make_client(fake) as client, pytest.raises(QuotaExceeded) as info:
        client.get_upstream_msg_hour("2025-12-01", "2025-12-31")
    assert str(info.value).startswith(
        "45009 reach max api daily quota limit (calling /datacube/getupstreammsghour) — "
        "the daily quota of /datacube/getupstreammsghour is used up"
    )
    assert fake.calls["getupstreammsghour"] == 3


def test_server_side_range_check_surfaces_from_call(fake: FakeWeChat) -> None:
    with make_client(fake) as client, pytest.raises(DateRangeError) as info:
        client.call("getupstreammsg", "2025-12-01", "2025-12-08")  # call() does not split
    assert info.value.text == "date range error"


@pytest.mark.parametrize(
    ("secret", "appid", "errcode"),
    [("wrong-secret", APPID, 40125), (SECRET, "wxunknown", 40013)],
)
def test_bad_credentials_are_invalid_app_secret_and_not_retried(
    fake: FakeWeChat, secret: str, appid: str, errcode: int
) -> None:
    with (
        Client(appid, secret, transport=fake.transport(), token_cache=MemoryTokenCache()) as client,
        pytest.raises(InvalidAppSecret) as info,
    ):
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    assert info.value.errcode == errcode
    assert info.value.api == "/cgi-bin/stable_token"
    assert "check the appid and secret" in str(info.value)
    assert fake.token_calls["/cgi-bin/stable_token"] == 1
    assert fake.datacube_requests() == []


def test_40001_from_the_token_endpoint_means_a_wrong_secret() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"errcode": 40001, "errmsg": "invalid credential, access_token is invalid"}
        )

    with (
        Client(
            APPID, "x", transport=httpx.MockTransport(handler), token_cache=MemoryTokenCache()
        ) as client,
        pytest.raises(InvalidAppSecret),
    ):
        client.get_upstream_msg("2025-12-01", "2025-12-01")


@pytest.mark.parametrize(
    ("errmsg", "rid", "text"),
    [
        (
            "api unauthorized rid: 6801ee67-141cbbbc-25c96788",
            "6801ee67-141cbbbc-25c96788",
            "api unauthorized",
        ),
        (
            "api unauthorized, rid: 65308fcf-1a2b3c4d-0a0b0c0d",
            "65308fcf-1a2b3c4d-0a0b0c0d",
            "api unauthorized",
        ),
        (
            "empty news data hint: [vaCAwA040938-0] rid: 682327c8-0e01a61c-5ee96b13",
            "682327c8-0e01a61c-5ee96b13",
            "empty news data",
        ),
        ("date range error hint: [_muTLA05701504]", None, "date range error"),
        ("system error", None, "system error"),
    ],
)
def test_rid_parsing(errmsg: str, rid: str | None, text: str) -> None:
    assert parse_rid(errmsg) == rid
    assert strip_request_ids(errmsg) == text
    error = WeChatError.from_body({"errcode": 48001, "errmsg": errmsg})
    assert (error.rid, error.text, error.errmsg) == (rid, text, errmsg)


def test_unknown_errcodes_and_pickling() -> None:
    unknown = WeChatError.from_body({"errcode": 12345, "errmsg": "odd rid: 00000000-11111111-2"})
    assert type(unknown) is WeChatError
    assert unknown.rid is None  # not three groups of 8 hex digits
    quota = WeChatError.from_body(
        {
            "errcode": 45009,
            "errmsg": "reach max api daily quota limit rid: aaaaaaaa-bbbbbbbb-cccccccc",
        },
        api="/datacube/getupstreammsg",
    )
    again = pickle.loads(pickle.dumps(quota))
    assert type(again) is QuotaExceeded
    assert (again.errcode, again.rid, again.api, str(again)) == (
        45009,
        "aaaaaaaa-bbbbbbbb-cccccccc",
        "/datacube/getupstreammsg",
        str(quota),
    )


# ------------------------------------------------------------------------ token caches


def test_file_cache_shares_one_token_between_clients(tmp_path: Path) -> None:
    fake = FakeWeChat()
    with (
        make_client(fake, token_cache=FileTokenCache(tmp_path)) as a,
        make_client(fake, token_cache=FileTokenCache(tmp_path)) as b,
    ):
        a.get_upstream_msg("2025-12-01", "2025-12-01")
        b.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.token_calls["/cgi-bin/stable_token"] == 1
    tokens = {r.url.params["access_token"] for r in fake.datacube_requests()}
    assert tokens == {fake.stable[APPID]}
    files = sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".json")
    assert len(files) == 1
    assert stat.S_IMODE((tmp_path / files[0]).stat().st_mode) == 0o600
    assert APPID not in files[0] and SECRET not in (tmp_path / files[0]).read_text()


def test_file_lock_makes_a_concurrent_second_fetcher_wait_and_reuse(tmp_path: Path) -> None:
    fake = FakeWeChat()
    fake.token_delay = 0.3  # a slow token call: both clients ask at the same time
    clients = [make_client(fake, token_cache=FileTokenCache(tmp_path)) for _ in range(3)]
    errors: list[BaseException] = []

    def work(client: Client) -> None:
        try:
            client.get_upstream_msg("2025-12-01", "2025-12-01")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    assert errors == []
    assert fake.token_calls["/cgi-bin/stable_token"] == 1
    assert fake.calls["getupstreammsg"] == 3


def test_classic_tokens_shared_through_the_cache_are_not_superseded(tmp_path: Path) -> None:
    fake = FakeWeChat()
    for _ in range(3):
        with make_client(fake, token_api="token", token_cache=FileTokenCache(tmp_path)) as c:
            c.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.token_calls["/cgi-bin/token"] == 1


def test_file_cache_tolerates_a_corrupt_file(tmp_path: Path) -> None:
    fake = FakeWeChat()
    with make_client(fake, token_cache=FileTokenCache(tmp_path)) as c:
        c.get_upstream_msg("2025-12-01", "2025-12-01")
    for path in tmp_path.glob("*.json"):
        path.write_text("{not json")
    with make_client(fake, token_cache=FileTokenCache(tmp_path)) as c:
        c.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.token_calls["/cgi-bin/stable_token"] == 2


def test_default_file_cache_lives_in_the_users_cache_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    fake = FakeWeChat()
    with Client(APPID, SECRET, transport=fake.transport(), clock=now_shanghai) as client:
        client.get_upstream_msg("2025-12-01", "2025-12-01")
    if sys.platform.startswith("linux"):
        assert len(list((tmp_path / "msgcube" / "tokens").glob("*.json"))) == 1


class FakeRedis:
    """A test double of the few Redis commands the cache uses (GET, SET NX PX, EVAL)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.sets: list[str] = []

    def get(self, name: str) -> bytes | None:
        with self.lock:
            return self.data.get(name)

    def set(self, name: str, value: bytes | str, nx: bool = False, px: int | None = None) -> bool:
        assert px is not None and px > 0  # every key we write expires
        with self.lock:
            if nx and name in self.data:
                return False
            self.data[name] = value.encode() if isinstance(value, str) else value
            self.sets.append(name)
            return True

    def eval(self, script: str, numkeys: int, *args: str) -> int:
        # The compare-and-delete release: delete KEYS[1] only if it still holds ARGV[1].
        assert numkeys == 1 and "del" in script
        key, owner = args
        with self.lock:
            if self.data.get(key) == owner.encode():
                del self.data[key]
                return 1
            return 0


def test_redis_cache_shares_one_token_and_releases_its_lock() -> None:
    fake = FakeWeChat()
    redis = FakeRedis()
    with (
        make_client(fake, token_cache=RedisTokenCache(redis)) as a,
        make_client(fake, token_cache=RedisTokenCache(redis)) as b,
    ):
        a.get_upstream_msg("2025-12-01", "2025-12-01")
        b.get_upstream_msg("2025-12-01", "2025-12-01")
    assert fake.token_calls["/cgi-bin/stable_token"] == 1
    assert [k for k in redis.data if k.endswith(":lock")] == []
    assert sum(1 for k in redis.sets if k.endswith(":lock")) == 1


def test_redis_lock_waits_for_the_holder_then_times_out() -> None:
    redis = FakeRedis()
    waits = Sleeps()
    cache = RedisTokenCache(redis, lock_timeout=0.2, poll_interval=0.05, sleep=waits)
    redis.set("msgcube:token:k:lock", "someone-else", nx=True, px=30000)
    with pytest.raises(Exception, match="Redis token lock"), cache.lock("k"):
        pass
    assert len(waits.delays) == 4
    del redis.data["msgcube:token:k:lock"]
    with cache.lock("k"):
        assert "msgcube:token:k:lock" in redis.data
    assert "msgcube:token:k:lock" not in redis.data


def test_redis_url_without_the_package_is_a_clear_error() -> None:
    if importlib.util.find_spec("redis") is not None:
        pytest.skip("redis is installed")
    with pytest.raises(Exception, match="pip install redis"):
        RedisTokenCache("redis://localhost:6379/0")


def test_token_cache_expiry_margin_never_exceeds_half_the_lifetime() -> None:
    clock = FakeClock()

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"access_token": "short", "expires_in": 400})

    provider = CredentialTokenProvider(
        APPID,
        SECRET,
        transport=httpx.MockTransport(handler),
        cache=MemoryTokenCache(),
        clock=clock,
    )
    assert provider.get_token() == "short"
    clock.advance(199)
    assert provider.get_token() == "short"
    assert provider.fetches == 1
    clock.advance(2)
    provider.get_token()
    assert provider.fetches == 2
    provider.close()


def test_client_requires_credentials() -> None:
    with pytest.raises(ValueError, match="appid and secret"):
        Client(APPID)
    with pytest.raises(ValueError, match="span_profile"):
        Client(token="t", span_profile="strict")
