"""A small fake of WeChat's API (``api.weixin.qq.com``) for the client and sync tests.

It is a test double of *WeChat*, written from WeChat's documentation (shared/reference/
wechat-notes.md §1–§3), independently of msgcube's own server code: it validates
requests the way WeChat does (POST, ``access_token`` in the query, JSON body, strict
dates, the span rule, end ≤ yesterday) and answers with WeChat's envelopes (``{"list":
[...]}``, or HTTP 200 + ``{"errcode", "errmsg": "... rid: ..."}``). Knobs let tests script
errors, quotas, "data not ready" periods, a recount (``version``) and slow token calls.

Use it as an ``httpx.MockTransport`` handler, or serve it over real HTTP with
``serve_http`` (for tests with several processes).

The tests at the bottom check the fake itself against the documented rules, so that the
client tests do not pass against a fake that is more lenient than WeChat.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from msgcube.domain.endpoints import BY_NAME, Endpoint, Period, RowKind

SHANGHAI = ZoneInfo("Asia/Shanghai")
TODAY = date(2026, 1, 10)
APPID = "wxfake0123456789ab"
SECRET = "fake-secret-0123456789abcdef0123"

ERRMSG = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43002: "require POST method",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    48001: "api unauthorized",
    61007: "api is unauthorized to component",
    61500: "date format error",
    61501: "date range error",
    61503: "data not ready",
}

SPANS = {
    "classic": {
        "day": 7,
        "hour": 1,
        "week": 30,
        "month": 30,
        "dist": 15,
        "distweek": 30,
        "distmonth": 30,
    },
    "current": {
        "day": 7,
        "hour": 1,
        "week": 1,
        "month": 1,
        "dist": 15,
        "distweek": 15,
        "distmonth": 15,
    },
}
for _spans in SPANS.values():  # interface analysis: the same in both tables
    _spans |= {"interfacesummary": 30, "interfacesummaryhour": 1}
"""WeChat's two span tables, spelled out independently of msgcube's endpoint table."""


def _span_key(name: str) -> str:
    suffix = name.removeprefix("getupstreammsg").removeprefix("get")
    return suffix or "day"


def now_shanghai(day: date = TODAY, hour: int = 9) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=SHANGHAI)


class FakeClock:
    """Seconds since the epoch, moved by tests; shared by the fake and token providers."""

    def __init__(self, start: float = 1_768_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeWeChat:
    """Just enough of api.weixin.qq.com: tokens, stable tokens and the seven datacube APIs."""

    def __init__(
        self,
        *,
        today: date = TODAY,
        appid: str = APPID,
        secret: str = SECRET,
        profile: str = "classic",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.today = today
        self.accounts = {appid: secret}
        self.profile = profile
        self.clock = clock
        self.lock = threading.Lock()
        self.requests: list[httpx.Request] = []
        self.calls: Counter[str] = Counter()  # datacube calls per endpoint name
        self.token_calls: Counter[str] = Counter()  # per token path
        self.forced_refreshes = 0
        self.tokens: dict[str, tuple[str, float]] = {}  # token -> (appid, expires_at)
        self.stable: dict[str, str] = {}  # appid -> current stable token
        self.classic: dict[str, str] = {}  # appid -> latest /cgi-bin/token token
        self.script: dict[str, list[int]] = {}  # endpoint name or "*" -> errcodes to answer
        self.always: dict[str, int] = {}  # endpoint name or "*" -> errcode answered every time
        self.quota: dict[str, int] = {}  # endpoint name -> calls allowed (then 45009)
        self.not_ready_from: date | None = None  # periods touching days ≥ this answer 61503
        self.version = 0  # change to simulate a recount of past statistics
        self.token_delay = 0.0
        self.datacube_delay = 0.0
        self.rids: list[str] = []
        self._rid_counter = itertools.count(1)
        self._token_counter = itertools.count(1)

    # ------------------------------------------------------------------ plumbing

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        path = request.url.path
        if path in ("/cgi-bin/token", "/cgi-bin/stable_token"):
            if self.token_delay:
                time.sleep(self.token_delay)  # outside the lock: concurrent callers overlap
            with self.lock:
                self.token_calls[path] += 1
                if path == "/cgi-bin/token":
                    return self._classic_token(request)
                return self._stable_token(request)
        if path.startswith("/datacube/") and path.removeprefix("/datacube/") in BY_NAME:
            if self.datacube_delay:
                time.sleep(self.datacube_delay)
            with self.lock:
                return self._datacube(request, BY_NAME[path.removeprefix("/datacube/")])
        return httpx.Response(404, text="not found")

    def _json(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.Response(
            200,
            content=orjson.dumps(body),
            headers={"Content-Type": "application/json; encoding=utf-8"},
        )

    def error(self, errcode: int) -> httpx.Response:
        n = next(self._rid_counter)
        rid = f"{n:08x}-{zlib.crc32(str(n).encode()):08x}-6a5c0b1e"
        self.rids.append(rid)
        return self._json({"errcode": errcode, "errmsg": f"{ERRMSG[errcode]} rid: {rid}"})

    def _issue(self, appid: str, lifetime: float = 7200.0) -> str:
        token = f"TOKEN{next(self._token_counter):04d}_" + "x" * 100
        self.tokens[token] = (appid, self.clock() + lifetime)
        return token

    def _credentials(self, appid: Any, secret: Any, grant: Any) -> int | None:
        if grant != "client_credential":
            return 40002
        if not appid:
            return 41002
        if not secret:
            return 41004
        if appid not in self.accounts:
            return 40013
        if self.accounts[appid] != secret:
            return 40125
        return None

    # ---------------------------------------------------------------- tokens

    def _classic_token(self, request: httpx.Request) -> httpx.Response:
        if request.method != "GET":
            return self.error(43002)
        q = request.url.params
        err = self._credentials(q.get("appid"), q.get("secret"), q.get("grant_type"))
        if err:
            return self.error(err)
        appid = q["appid"]
        previous = self.classic.get(appid)
        if previous is not None:  # superseded: keeps working for 5 more minutes
            old_appid, expires = self.tokens[previous]
            self.tokens[previous] = (old_appid, min(expires, self.clock() + 300))
        token = self._issue(appid)
        self.classic[appid] = token
        return self._json({"access_token": token, "expires_in": 7200})

    def _stable_token(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST":
            return self.error(43002)
        try:
            body = orjson.loads(request.content)
        except orjson.JSONDecodeError:
            return self.error(47001)
        if not isinstance(body, dict):
            return self.error(47001)
        err = self._credentials(body.get("appid"), body.get("secret"), body.get("grant_type"))
        if err:
            return self.error(err)
        appid = body["appid"]
        now = self.clock()
        current = self.stable.get(appid)
        if body.get("force_refresh") is True:
            self.forced_refreshes += 1
            if current is not None:
                del self.tokens[current]
            current = None
        if current is not None and current in self.tokens:
            expires = self.tokens[current][1]
            if expires - now > 300:
                return self._json({"access_token": current, "expires_in": int(expires - now)})
        token = self._issue(appid)  # the old one stays valid until its own expiry
        self.stable[appid] = token
        return self._json({"access_token": token, "expires_in": 7200})

    def rotate_stable(self, appid: str = APPID) -> None:
        """Another party force-refreshed the stable token: the current one stops working."""
        with self.lock:
            current = self.stable.pop(appid, None)
            if current is not None:
                del self.tokens[current]

    # -------------------------------------------------------------- datacube

    def _scripted(self, name: str) -> int | None:
        for key in (name, "*"):
            queue = self.script.get(key)
            if queue:
                return queue.pop(0)
        return self.always.get(name, self.always.get("*"))

    def _datacube(self, request: httpx.Request, ep: Endpoint) -> httpx.Response:
        if request.method != "POST":
            return self.error(43002)
        token = request.url.params.get("access_token")
        if token is None:
            return self.error(41001)
        if token not in self.tokens:
            return self.error(40001)
        if self.tokens[token][1] <= self.clock():
            return self.error(42001)
        scripted = self._scripted(ep.name)
        if scripted is not None:
            self.calls[ep.name] += 1
            return self.error(scripted)
        self.calls[ep.name] += 1
        if ep.name in self.quota and self.calls[ep.name] > self.quota[ep.name]:
            return self.error(45009)
        if not request.content:
            return self.error(44002)
        try:
            body = orjson.loads(request.content)
        except orjson.JSONDecodeError:
            return self.error(47001)
        if not isinstance(body, dict):
            return self.error(47001)
        begin_text, end_text = body.get("begin_date"), body.get("end_date")
        if not isinstance(begin_text, str) or not isinstance(end_text, str):
            return self.error(47001)
        try:
            if len(begin_text) != 10 or len(end_text) != 10:
                raise ValueError
            begin, end = date.fromisoformat(begin_text), date.fromisoformat(end_text)
        except ValueError:
            return self.error(61500)
        span = SPANS[self.profile][_span_key(ep.name)]
        if begin > end or end >= self.today or (end - begin).days >= span:
            return self.error(61501)
        labels = self.labels(ep, begin, end)
        if self.not_ready_from is not None and any(
            last_day(ep, label) >= self.not_ready_from for label in labels
        ):
            return self.error(61503)
        return self._json({"list": [row for label in labels for row in self.rows(ep, label)]})

    # ------------------------------------------------------------------ data

    def labels(self, ep: Endpoint, begin: date, end: date) -> list[date]:
        """Labels WeChat reports for [begin, end]: inside it, and the period has ended."""
        out = []
        day = max(begin, date(2014, 12, 1))
        while day <= end:
            is_label = (
                (ep.period is Period.WEEK and day.weekday() == 0)
                or (ep.period is Period.MONTH and day.day == 1)
                or ep.period in (Period.DAY, Period.HOUR)
            )
            if is_label and last_day(ep, day) < self.today:
                out.append(day)
            day += timedelta(days=1)
        return out

    def rows(self, ep: Endpoint, label: date) -> list[dict[str, Any]]:
        """The statistics of one period: deterministic, and different for each ``version``."""
        h = zlib.crc32(f"{ep.name}|{label}|{self.version}".encode())
        rows: list[dict[str, Any]] = []
        ref = label.isoformat()
        if ep.kind is RowKind.DIST:
            for interval in (0, 1, 2, 3):
                if (h >> interval) % 4 == 0:
                    continue  # zero rows are omitted
                rows.append(
                    {"ref_date": ref, "count_interval": interval, "msg_user": 1 + (h >> 3) % 97}
                )
            return rows
        hours: list[int | None] = [None]
        if ep.period is Period.HOUR:
            hours = [*sorted({(h % 24) * 100, ((h >> 5) % 24) * 100})]
        if ep.kind is RowKind.INTERFACE:
            for hour in hours:
                calls = 1 + h % 500
                row = {"ref_date": ref} | ({} if hour is None else {"ref_hour": hour})
                rows.append(
                    row
                    | {
                        "callback_count": calls,
                        "fail_count": (h >> 4) % 3,
                        "total_time_cost": calls * (20 + h % 300),
                        "max_time_cost": 400 + (h >> 7) % 4000,
                    }
                )
            return rows
        types = (1, 2, 6) if (h >> 9) % 2 else (1, 3)
        for hour in hours:
            for msg_type in types:
                users = 1 + (h >> msg_type) % 40
                row: dict[str, Any] = {"ref_date": ref}
                if hour is not None:
                    row["ref_hour"] = hour
                row |= {"msg_type": msg_type, "msg_user": users, "msg_count": users + h % 25}
                rows.append(row)
        return rows

    def expected(self, ep: Endpoint, begin: date, end: date) -> list[dict[str, Any]]:
        """What one unbounded query would return (the truth the client must reassemble)."""
        return [row for label in self.labels(ep, begin, end) for row in self.rows(ep, label)]

    def datacube_requests(self, name: str | None = None) -> list[httpx.Request]:
        return [
            r
            for r in self.requests
            if r.url.path.startswith("/datacube/")
            and (name is None or r.url.path == f"/datacube/{name}")
        ]


def last_day(ep: Endpoint, label: date) -> date:
    if ep.period is Period.WEEK:
        return label + timedelta(days=6)
    if ep.period is Period.MONTH:
        nxt = date(label.year + label.month // 12, label.month % 12 + 1, 1)
        return nxt - timedelta(days=1)
    return label


@contextlib.contextmanager
def serve_http(fake: FakeWeChat) -> Iterator[str]:
    """Serve ``fake`` on a real local port (for tests that run several processes)."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            request = httpx.Request(
                self.command,
                f"https://api.weixin.qq.com{self.path}",
                headers=dict(self.headers.items()),
                content=body,
            )
            response = fake(request)
            self.send_response(response.status_code)
            for key, value in response.headers.items():
                if key.lower() not in ("content-length", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(response.content)))
            self.end_headers()
            self.wfile.write(response.content)

        do_GET = _handle
        do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# --------------------------------------------------------------------------------------
# The fake itself follows WeChat's documented rules.


@pytest.fixture
def fake() -> FakeWeChat:
    return FakeWeChat()


def _token(fake: FakeWeChat) -> str:
    response = fake(
        httpx.Request(
            "POST",
            "https://api.weixin.qq.com/cgi-bin/stable_token",
            content=orjson.dumps(
                {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
            ),
        )
    )
    return str(response.json()["access_token"])


def _datacube(fake: FakeWeChat, name: str, body: Any, token: str | None) -> dict[str, Any]:
    params = {"access_token": token} if token else {}
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = fake(
        httpx.Request(
            "POST", f"https://api.weixin.qq.com/datacube/{name}", params=params, content=content
        )
    )
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize(
    ("name", "begin", "end", "errcode"),
    [
        ("getupstreammsg", "2025-12-01", "2025-12-07", None),
        ("getupstreammsg", "2025-12-01", "2025-12-08", 61501),  # 8 days
        ("getupstreammsghour", "2025-12-01", "2025-12-01", None),
        ("getupstreammsghour", "2025-12-01", "2025-12-02", 61501),
        ("getupstreammsgweek", "2025-11-03", "2025-12-02", None),  # 29 days
        ("getupstreammsgweek", "2025-11-03", "2025-12-03", 61501),  # 30 days
        ("getupstreammsgdist", "2025-12-01", "2025-12-15", None),
        ("getupstreammsgdist", "2025-12-01", "2025-12-16", 61501),
        ("getupstreammsg", "2026-01-09", "2026-01-09", None),  # yesterday
        ("getupstreammsg", "2026-01-10", "2026-01-10", 61501),  # today
        ("getupstreammsg", "2025-12-02", "2025-12-01", 61501),
        ("getupstreammsg", "2025-12-1", "2025-12-01", 61500),
        ("getupstreammsg", "2025-02-30", "2025-03-01", 61500),
    ],
)
def test_fake_applies_wechat_date_rules(
    fake: FakeWeChat, name: str, begin: str, end: str, errcode: int | None
) -> None:
    body = _datacube(fake, name, {"begin_date": begin, "end_date": end}, _token(fake))
    assert body.get("errcode") == errcode
    if errcode is None:
        assert set(body) == {"list"}
    else:
        assert body["errmsg"].startswith(ERRMSG[errcode] + " rid: ")


def test_fake_request_errors(fake: FakeWeChat) -> None:
    good = {"begin_date": "2025-12-01", "end_date": "2025-12-01"}
    assert _datacube(fake, "getupstreammsg", good, None)["errcode"] == 41001
    assert _datacube(fake, "getupstreammsg", good, "nope")["errcode"] == 40001
    token = _token(fake)
    assert _datacube(fake, "getupstreammsg", b"", token)["errcode"] == 44002
    assert _datacube(fake, "getupstreammsg", b"[1]", token)["errcode"] == 47001
    assert _datacube(fake, "getupstreammsg", {"begin_date": 1}, token)["errcode"] == 47001


def test_fake_week_and_month_rows_are_labelled_and_only_when_ended(fake: FakeWeChat) -> None:
    token = _token(fake)
    month = _datacube(
        fake, "getupstreammsgmonth", {"begin_date": "2025-11-01", "end_date": "2025-11-05"}, token
    )
    assert {r["ref_date"] for r in month["list"]} == {"2025-11-01"}
    week = _datacube(
        fake, "getupstreammsgweek", {"begin_date": "2026-01-05", "end_date": "2026-01-09"}, token
    )
    assert week == {"list": []}  # the week of Monday 5 Jan has not ended on the 10th


def test_fake_stable_token_is_stable_until_its_last_five_minutes() -> None:
    clock = FakeClock()
    fake = FakeWeChat(clock=clock)
    first = _token(fake)
    clock.advance(7200 - 301)
    assert _token(fake) == first
    clock.advance(2)
    second = _token(fake)
    assert second != first
    assert (
        _datacube(
            fake, "getupstreammsg", {"begin_date": "2025-12-01", "end_date": "2025-12-01"}, first
        ).get("errcode")
        is None
    )  # the old token keeps working until its own expiry
