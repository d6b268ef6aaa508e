"""A client for WeChat's message-analysis datacube API — against WeChat or against msgcube.

::

    from msgcube.client import Client

    with Client("wx1234", "secret") as wechat:           # base_url defaults to WeChat
        rows = wechat.get_upstream_msg("2025-01-01", "2025-12-31")   # 53 calls, merged
        hours = wechat.fetch("getupstreammsghour", date(2025, 6, 1), date(2025, 6, 7))

    from msgcube.client.sync import sync
    report = sync(wechat, "sqlite:///stats.db", "wx1234")           # incremental mirror
    print(report.summary())

Ranges are split into the fewest calls each endpoint's max span allows, tokens come from
``stable_token`` through a cache shared by every process on the host (file lock; Redis as
an option), 40001/42001 are retried with a fresh token a bounded number of times, ``-1``
with backoff, and errors are typed (``QuotaExceeded`` names the API whose quota is gone).
"""

from msgcube.client.call_plan import Row, plan_windows
from msgcube.client.clients import AsyncClient, Client, method_name
from msgcube.client.errors import (
    ClientError,
    DataFormatError,
    DataNotReady,
    DateFormatError,
    DateRangeError,
    InvalidAppSecret,
    InvalidCredential,
    IPNotWhitelisted,
    NetworkError,
    QuotaExceeded,
    ResponseError,
    SystemBusy,
    TokenExpired,
    Unauthorized,
    WeChatError,
)
from msgcube.client.protocol import DEFAULT_BASE_URL, Backoff
from msgcube.client.tokens import (
    AsyncCallableTokenProvider,
    AsyncTokenProvider,
    CachedToken,
    CallableTokenProvider,
    CredentialTokenProvider,
    FileTokenCache,
    MemoryTokenCache,
    RedisTokenCache,
    StaticTokenProvider,
    TokenCache,
    TokenProvider,
)
from msgcube.domain.windows import Window

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncCallableTokenProvider",
    "AsyncClient",
    "AsyncTokenProvider",
    "Backoff",
    "CachedToken",
    "CallableTokenProvider",
    "Client",
    "ClientError",
    "CredentialTokenProvider",
    "DataFormatError",
    "DataNotReady",
    "DateFormatError",
    "DateRangeError",
    "FileTokenCache",
    "IPNotWhitelisted",
    "InvalidAppSecret",
    "InvalidCredential",
    "MemoryTokenCache",
    "NetworkError",
    "QuotaExceeded",
    "RedisTokenCache",
    "ResponseError",
    "Row",
    "StaticTokenProvider",
    "SystemBusy",
    "TokenCache",
    "TokenExpired",
    "TokenProvider",
    "Unauthorized",
    "WeChatError",
    "Window",
    "method_name",
    "plan_windows",
]
