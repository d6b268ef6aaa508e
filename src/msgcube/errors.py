"""One exception tree for the whole package.

::

    MsgcubeError
    ├── ApiError(errcode)        a WeChat errcode; the web edge answers {"errcode", "errmsg"}
    ├── IngestError              a push or an import line that cannot be accepted (a reason)
    │   └── ImportStopped        an import that stopped before the end of its input
    ├── BadSignature             a callback request that does not prove knowledge of the Token
    ├── PushRefused              an authentic push msgcube will not store (403)
    ├── UpstreamFailed           an upstream answer the relay cannot pass on (502)
    ├── ConfigError              a setting that cannot be used
    ├── AccountError(ValueError)  an account change that cannot be made (a bad value)
    │   └── AccountExists        the appid is registered already
    ├── PlatformError(ValueError)  a platform registration/authorization that cannot be done
    ├── NotFound(LookupError)    an unknown platform, account or authorization
    ├── BodyTooLarge             a request body over the limit
    └── RequestRefused(status)   an HTTP answer of msgcube's own APIs (not WeChat's)
        ├── AdminError           the admin API: ``{"error": message}`` with ``status``
        └── SignInRequired       the dashboard: the visitor is not signed in (401)

Library code raises these; the edges translate them once: the web app's exception
handlers (``web/boundary.py``) and the CLI's handler. Anything else reaching the web edge
is a fault (a database down, a bug): WeChat paths answer ``-1 system error``.
The ``ERRMSG`` table holds WeChat's texts verbatim (see shared/reference/wechat-notes.md
§2.2), so every code is spelled the same way wherever it surfaces.
"""

from __future__ import annotations

ERRMSG: dict[int, str] = {
    -1: "system error",
    0: "ok",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40013: "invalid appid",
    40125: "invalid appsecret",
    40164: "invalid ip {ip}, not in whitelist",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    44002: "empty post data",
    45009: "reach max api daily quota limit",
    47001: "data format error",
    48001: "api unauthorized",
    48006: "forbid to clear quota because of reaching the limit",
    61003: "component is not authorized by this account",
    61005: "component ticket is expired",
    61006: "component ticket is invalid",
    61007: "api is unauthorized to component",
    61011: "invalid component",
    61014: "must use component token for component api",
    61023: "refresh_token is invalid",
    61024: "must use api(api_component_token) to get token for component acct",
    61500: "date format error",
    61501: "date range error",
    61503: "data not ready",
    76003: "cgi_path format error",
    76021: "cgi_path not found, please check",
    76022: "token type error",
}


class MsgcubeError(Exception):
    """Base of every error msgcube raises on purpose."""


class ApiError(MsgcubeError):
    """A WeChat API error: ``errcode`` plus WeChat's own text.

    ``fields`` fill the placeholders of texts such as 40164's ``invalid ip {ip}``.
    ``detail`` is for logs and the CLI only; it never reaches an API response, because
    WeChat's clients match on the text.
    """

    def __init__(self, errcode: int, detail: str | None = None, **fields: str) -> None:
        self.errcode = errcode
        template = ERRMSG.get(errcode, "system error")
        self.errmsg = template.format(**fields) if fields else template
        self.detail = detail
        super().__init__(f"{errcode} {self.errmsg}" + (f" ({detail})" if detail else ""))


class IngestError(MsgcubeError):
    """A push or import record that cannot be stored; ``reason`` says why in plain words."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ImportStopped(IngestError):
    """An import that stopped before the end of its input (its parser failed or died).

    The batches committed before stay committed, each one whole; importing the file again
    stores the rest (stored messages are recognised as duplicates).
    """


class BadSignature(MsgcubeError):
    """A callback request that does not prove knowledge of the account's Token.

    Answered 403 and stored nowhere (not even in the quarantine); ``reason`` says which
    check failed, for the access log.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class AnalyticsError(MsgcubeError):
    """The analytics database (ClickHouse, ``analytics_db``) refused a statement or is unreachable.

    A push that hits it is answered HTTP 500 (WeChat retries it); an API call errcode -1.
    """


class ConfigError(MsgcubeError):
    """A setting or command-line value that cannot be used."""


class PlatformError(MsgcubeError, ValueError):
    """A registration or authorization request that cannot be carried out (CLI / admin)."""


class NotFound(MsgcubeError, LookupError):
    """An unknown platform, account or authorization (CLI / admin: 404)."""

    def __str__(self) -> str:
        # LookupError's str() of a KeyError-like argument would add quotes; keep the text.
        return str(self.args[0]) if self.args else "not found"


class BodyTooLarge(MsgcubeError):
    """A request body over the limit: 47001 on WeChat paths, HTTP 413 elsewhere."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"request body over {limit} bytes")


class RequestRefused(MsgcubeError):
    """A request msgcube's own HTTP APIs refuse with ``status`` and a plain message."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class AdminError(RequestRefused):
    """The admin API refuses a request (answered ``{"error": message}`` with ``status``)."""


class SignInRequired(RequestRefused):
    """A dashboard data request without a signed-in visitor (401)."""

    def __init__(self) -> None:
        super().__init__(401, "sign in first")


class AccountError(MsgcubeError, ValueError):
    """An account change that cannot be made; the message names the field (CLI / admin: 400)."""


class AccountExists(AccountError):
    """``account add`` / ``POST /admin/accounts`` for an appid that is registered (409)."""


class PushRefused(MsgcubeError):
    """An authentic push msgcube will not store (HTTP 403, stored and forwarded nowhere):
    e.g. a platform's push for an account that platform may not feed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UpstreamFailed(MsgcubeError):
    """An upstream's answer the relay cannot pass on (cut short, too large): WeChat gets the
    relay's failure answer (502) instead, and retries."""
