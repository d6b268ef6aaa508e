"""What the client raises: one class per WeChat errcode family, plus transport trouble.

::

    MsgcubeError
    └── ClientError                  anything msgcube.client raises on purpose
        ├── ResponseError            not a WeChat answer (HTTP status ≠ 200, body not JSON)
        ├── NetworkError             the request did not get through (connect error, timeout)
        └── WeChatError              an {"errcode": N, "errmsg": "..."} body (HTTP 200)
            ├── SystemBusy           -1
            ├── InvalidCredential    40001, 40014 (a datacube call's token is bad or superseded)
            ├── TokenExpired         42001
            ├── InvalidAppSecret     40125, 40013, 41002, 41004, 40002, 40243 (and 40001
            │                        when the *token* endpoint answers it: wrong secret)
            ├── IPNotWhitelisted     40164
            ├── Unauthorized         48001, 61007, 61003
            ├── QuotaExceeded        45009, 45011 (names the API whose quota is used up)
            ├── DataFormatError      47001, 44002
            ├── DateFormatError      61500
            ├── DateRangeError       61501
            └── DataNotReady         61503

WeChat answers errors with HTTP 200 and a JSON body, so the status code says nothing;
callers catch these classes instead of comparing numbers. ``errmsg`` is kept verbatim
(WeChat's SDKs and support staff match on it) and the request id WeChat appends
(``... rid: xxxxxxxx-xxxxxxxx-xxxxxxxx``) is parsed out, because it is what WeChat's
support (and msgcube's log) need to find the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar

from msgcube.errors import MsgcubeError

_RID_RE = re.compile(r"[\s,]*\brid:\s*([0-9a-fA-F]{8}-[0-9a-fA-F]{8}-[0-9a-fA-F]{8})\s*$")
_HINT_RE = re.compile(r"[\s,]*\bhint:\s*\[([^\]]*)\]")


def parse_rid(errmsg: str) -> str | None:
    """The request id at the end of an errmsg (``... rid: 6801ee67-141cbbbc-25c96788``)."""
    match = _RID_RE.search(errmsg)
    return match.group(1).lower() if match else None


def parse_hint(errmsg: str) -> str | None:
    """The older ``hint: [XXXX]`` request tag, still sent alongside the rid by some APIs."""
    match = _HINT_RE.search(errmsg)
    return match.group(1) if match else None


def strip_request_ids(errmsg: str) -> str:
    """WeChat's text without its ``hint: [..]`` / ``rid: ..`` suffixes (``"api unauthorized"``)."""
    return _HINT_RE.sub("", _RID_RE.sub("", errmsg)).strip().rstrip(",").strip()


class ClientError(MsgcubeError):
    """Base of everything ``msgcube.client`` raises on purpose."""


class ResponseError(ClientError):
    """The server did not answer like WeChat: a non-200 status or a body that is not JSON.

    The URL is deliberately not part of the message: it carries the access token.
    """

    def __init__(self, message: str, *, status: int | None = None, api: str | None = None) -> None:
        self.status = status
        self.api = api
        super().__init__(message)


class NetworkError(ClientError):
    """The request did not get through (connection refused, timeout, reset).

    Wraps httpx's transport errors so that one ``except ClientError`` covers everything a
    call can fail with, and so that no message carries the URL (and its access token).
    """

    def __init__(self, message: str, *, api: str | None = None, refused: bool = False) -> None:
        self.api = api
        self.refused = refused
        """Nothing listens at the address: retrying within seconds would not change that."""
        super().__init__(message)


class WeChatError(ClientError):
    """An error body from WeChat (or msgcube): ``errcode``, verbatim ``errmsg``, parsed ``rid``.

    ``api`` is the path that was called (``/datacube/getupstreammsg``); it makes messages
    such as "quota used up" say *which* quota.
    """

    codes: ClassVar[tuple[int, ...]] = ()
    advice: ClassVar[str] = ""

    def __init__(
        self,
        errcode: int,
        errmsg: str,
        rid: str | None = None,
        *,
        api: str | None = None,
    ) -> None:
        self.errcode = errcode
        self.errmsg = errmsg
        self.rid = rid if rid is not None else parse_rid(errmsg)
        self.hint = parse_hint(errmsg)
        self.api = api
        super().__init__(self._describe())

    @property
    def text(self) -> str:
        """WeChat's message without request ids, e.g. ``"date range error"``."""
        return strip_request_ids(self.errmsg)

    def _describe(self) -> str:
        parts = [f"{self.errcode} {self.text}"]
        if self.api:
            parts.append(f"(calling {self.api})")
        advice = self._advice()
        if advice:
            parts.append(f"— {advice.format(api=self.api or 'this API')}")
        if self.rid:
            parts.append(f"[rid: {self.rid}]")
        return " ".join(parts)

    def _advice(self) -> str:
        return self.advice

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions are pickled through their args; ours has keyword state too.
        return (_rebuild, (type(self), self.errcode, self.errmsg, self.rid, self.api))

    @staticmethod
    def from_body(body: Mapping[str, Any], *, api: str | None = None) -> WeChatError:
        """The typed error for an error body (unknown codes give a plain ``WeChatError``)."""
        errcode = int(body.get("errcode", -1))
        errmsg = str(body.get("errmsg", ""))
        cls = _BY_CODE.get(errcode, WeChatError)
        return cls(errcode, errmsg, api=api)


def _rebuild(
    cls: type[WeChatError], errcode: int, errmsg: str, rid: str | None, api: str | None
) -> WeChatError:
    return cls(errcode, errmsg, rid, api=api)


class SystemBusy(WeChatError):
    """``-1 system error``: WeChat is busy; the client already retried with backoff."""

    codes = (-1,)
    advice = "WeChat is busy; try again later"


class InvalidCredential(WeChatError):
    """The access token is unknown or superseded (another process fetched a new one)."""

    codes = (40001, 40014)
    advice = "the access token is not (or no longer) valid"


class TokenExpired(WeChatError):
    """The access token's 2 hours are over."""

    codes = (42001,)


class InvalidAppSecret(WeChatError):
    """The token endpoint refused the appid / secret: nothing to retry, fix the configuration."""

    codes = (40125, 40013, 41002, 41004, 40002, 40243)
    advice = "check the appid and secret"


class IPNotWhitelisted(WeChatError):
    """This host's address is not in the account's API IP whitelist."""

    codes = (40164,)
    advice = "add this host's IP address to the account's IP whitelist"


class Unauthorized(WeChatError):
    """The account (unverified) or the third-party platform (no permission set 1) may not call."""

    codes = (48001, 61007, 61003)
    advice = "the account or platform is not allowed to call {api}"


class QuotaExceeded(WeChatError):
    """A call quota is used up; the message names the API whose quota it is."""

    codes = (45009, 45011)

    def _advice(self) -> str:
        if self.errcode == 45011:
            return "the per-minute quota of {api} is used up; slow down"
        return (
            "the daily quota of {api} is used up; see /cgi-bin/openapi/quota/get, "
            "reset it with /cgi-bin/clear_quota or wait until tomorrow"
        )


class DataFormatError(WeChatError):
    """The request body was not what WeChat expects (a client bug, never a user's)."""

    codes = (47001, 44002)


class DateFormatError(WeChatError):
    """A date was not ``YYYY-MM-DD``."""

    codes = (61500,)


class DateRangeError(WeChatError):
    """begin after end, end not before today, or the endpoint's max span exceeded."""

    codes = (61501,)


class DataNotReady(WeChatError):
    """The statistics of a requested day are not final yet (WeChat: query after 08:00)."""

    codes = (61503,)
    advice = "the statistics are not ready yet; try again later"


_BY_CODE: dict[int, type[WeChatError]] = {
    code: cls
    for cls in (
        SystemBusy,
        InvalidCredential,
        TokenExpired,
        InvalidAppSecret,
        IPNotWhitelisted,
        Unauthorized,
        QuotaExceeded,
        DataFormatError,
        DateFormatError,
        DateRangeError,
        DataNotReady,
    )
    for code in cls.codes
}
