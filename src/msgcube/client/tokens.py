"""Access tokens without the well-known pains.

The classic pain: every worker calls ``/cgi-bin/token``, each call supersedes the
previous token, and five minutes later the other workers' calls fail with 40001. The
cures, all here:

* ``stable_token`` by default: WeChat returns the *same* token while it is valid, so
  even uncoordinated callers agree (``/cgi-bin/token`` stays available by option).
* One shared cache: a file per (base_url, appid, token API) guarded by a file lock
  (default; every process on the host), or Redis (every host). The lock is held while
  fetching, so a second process waits for the first one's token instead of fetching
  its own.
* Refresh ahead of expiry (``refresh_margin``, default the 5 minutes in which WeChat
  keeps old and new token valid) and, when a call still reports 40001/42001, a
  compare-and-invalidate: a process drops only the token that failed *for it*, so it
  picks up a token another process has already refreshed instead of superseding it.

A token provider is anything with ``get_token()`` and ``invalidate(token)``
(``TokenProvider``); the clients only talk to that interface, so tests and third-party
platforms (which get ``authorizer_access_token`` from their own component logic) plug
in their own.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import random
import secrets
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import filelock
import httpx
import orjson

from msgcube.client.errors import (
    ClientError,
    InvalidAppSecret,
    ResponseError,
    WeChatError,
)
from msgcube.client.protocol import (
    DEFAULT_BASE_URL,
    JSON_HEADERS,
    USER_AGENT,
    Attempts,
    Backoff,
    decode,
    join_url,
    json_body,
    network_error,
)

TokenApi = Literal["stable_token", "token"]
"""``stable_token`` (``POST /cgi-bin/stable_token``) or ``token`` (``GET /cgi-bin/token``)."""

TOKEN_PATHS: dict[str, str] = {"stable_token": "/cgi-bin/stable_token", "token": "/cgi-bin/token"}


@runtime_checkable
class TokenProvider(Protocol):
    """Where a client gets its ``access_token`` (blocking)."""

    def get_token(self) -> str:
        """A token believed valid now."""
        ...

    def invalidate(self, token: str) -> None:
        """WeChat rejected ``token`` (40001/42001): do not hand it out again."""
        ...


@runtime_checkable
class AsyncTokenProvider(Protocol):
    """The same, for providers that must not block an event loop."""

    async def get_token(self) -> str: ...

    async def invalidate(self, token: str) -> None: ...


class StaticTokenProvider:
    """One fixed token (a token handed over by another system, or a test)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self) -> str:
        return self._token

    def invalidate(self, token: str) -> None:
        """Nothing to refresh: the client sees the same token again and gives up at once."""

    def __repr__(self) -> str:
        return "StaticTokenProvider(<token>)"


class CallableTokenProvider:
    """A token from a function — e.g. a third-party platform's ``authorizer_access_token``.

    Third-party platforms already run ``component_access_token`` / ``api_authorizer_token``
    (and cache them) for all their authorizers; duplicating that here would be one more
    cache to keep consistent. So the platform passes its own ``get`` and, optionally,
    ``on_invalid(token)`` to refresh the authorizer token when WeChat rejects it.
    """

    def __init__(
        self, get: Callable[[], str], on_invalid: Callable[[str], None] | None = None
    ) -> None:
        self._get = get
        self._on_invalid = on_invalid

    def get_token(self) -> str:
        return self._get()

    def invalidate(self, token: str) -> None:
        if self._on_invalid is not None:
            self._on_invalid(token)


class AsyncCallableTokenProvider:
    """``CallableTokenProvider`` for coroutine functions."""

    def __init__(
        self,
        get: Callable[[], Awaitable[str]],
        on_invalid: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._get = get
        self._on_invalid = on_invalid

    async def get_token(self) -> str:
        return await self._get()

    async def invalidate(self, token: str) -> None:
        if self._on_invalid is not None:
            await self._on_invalid(token)


def token_provider(source: TokenProvider | Callable[[], str] | str) -> TokenProvider:
    """A ``TokenProvider`` from a provider, a function returning a token, or a token."""
    if isinstance(source, str):
        return StaticTokenProvider(source)
    if isinstance(source, TokenProvider):
        return source
    if callable(source):
        return CallableTokenProvider(source)
    raise TypeError(f"not a token, a function or a TokenProvider: {type(source).__name__}")


def is_async_provider(source: object) -> bool:
    """True for providers whose ``get_token`` is a coroutine function."""
    return inspect.iscoroutinefunction(getattr(source, "get_token", None))


# --------------------------------------------------------------------------- caches


@dataclass(frozen=True, slots=True)
class CachedToken:
    """A token with its absolute expiry and the moment to refresh it (Unix seconds)."""

    value: str = field(repr=False)
    expires_at: float
    refresh_at: float

    def fresh(self, now: float) -> bool:
        return now < self.refresh_at

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "access_token": self.value,
                "expires_at": self.expires_at,
                "refresh_at": self.refresh_at,
            }
        )

    @staticmethod
    def from_json(data: bytes | str | None) -> CachedToken | None:
        """The token in ``data``, or ``None`` for anything unreadable (a cache is never fatal)."""
        if data is None:
            return None
        try:
            raw = orjson.loads(data)
            return CachedToken(
                str(raw["access_token"]), float(raw["expires_at"]), float(raw["refresh_at"])
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None


class TokenCache(Protocol):
    """Storage shared by the processes that must use one token.

    ``lock(key)`` is held by whoever fetches a new token, so that the others wait and
    then ``load`` it rather than fetch (and, with ``/cgi-bin/token``, supersede) their own.
    """

    def load(self, key: str) -> CachedToken | None: ...

    def store(self, key: str, token: CachedToken) -> None: ...

    def lock(self, key: str) -> AbstractContextManager[None]: ...


def cache_key(base_url: str, appid: str, api: str) -> str:
    """One cache entry per server, account and token API (the two APIs' tokens differ).

    Hashed so that the appid and URL need no escaping in file names and Redis keys.
    """
    raw = f"{base_url.rstrip('/')}\n{appid}\n{api}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


class MemoryTokenCache:
    """A cache for this process only (no sharing): for tests and single-process scripts."""

    def __init__(self) -> None:
        self._tokens: dict[str, CachedToken] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def load(self, key: str) -> CachedToken | None:
        return self._tokens.get(key)

    def store(self, key: str, token: CachedToken) -> None:
        self._tokens[key] = token

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield


def default_cache_dir() -> Path:
    """The user's cache directory + ``msgcube/tokens`` (XDG on Linux, per-OS elsewhere)."""
    home = Path.home()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = home / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache")
    return base / "msgcube" / "tokens"


class FileTokenCache:
    """Tokens in ``<directory>/<key>.json``, fetched under ``<key>.lock`` (``filelock``).

    Every process on the host that points at the same directory shares one token; a
    network file system shared by several hosts works as far as its locking does (use
    Redis otherwise). Files are created ``0600`` in a ``0700`` directory: a token is a
    credential. Writes go through a temporary file and ``os.replace`` so a reader never
    sees half a token.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, *, lock_timeout: float = 120.0
    ) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()
        self.lock_timeout = lock_timeout

    def _path(self, key: str, suffix: str) -> Path:
        return self.directory / f"{key}{suffix}"

    def load(self, key: str) -> CachedToken | None:
        try:
            return CachedToken.from_json(self._path(key, ".json").read_bytes())
        except OSError:
            return None

    def store(self, key: str, token: CachedToken) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        final = self._path(key, ".json")
        tmp = self._path(key, f".{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(token.to_json())
        os.replace(tmp, final)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = filelock.FileLock(self._path(key, ".lock"), timeout=self.lock_timeout)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ClientError(
                f"waited {self.lock_timeout:g}s for the token lock in {self.directory}; "
                "another process is stuck fetching a token"
            ) from None
        try:
            yield
        finally:
            lock.release()


_RELEASE_LUA = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class RedisTokenCache:
    """Tokens in Redis, for processes on several hosts.

    ``redis`` is a ``redis.Redis`` client or a URL (the ``redis`` package is imported only
    then, so it stays an optional dependency). The fetch lock is ``SET key owner NX PX``
    with a time-to-live, so a crashed holder cannot block the others for longer than
    ``lock_ttl``; it is released with a compare-and-delete script so a slow holder never
    deletes a lock that has since passed to someone else.
    """

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str = "msgcube:token:",
        lock_ttl: float = 30.0,
        lock_timeout: float = 120.0,
        poll_interval: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(redis, str):
            try:
                redis_module = importlib.import_module("redis")  # optional dependency
            except ImportError as exc:
                raise ClientError(
                    "RedisTokenCache needs the 'redis' package (pip install redis)"
                ) from exc
            redis = redis_module.Redis.from_url(redis)
        self.redis = redis
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.lock_timeout = lock_timeout
        self.poll_interval = poll_interval
        self._sleep = sleep
        self._clock = clock

    def load(self, key: str) -> CachedToken | None:
        data = self.redis.get(self.prefix + key)
        return CachedToken.from_json(data)

    def store(self, key: str, token: CachedToken) -> None:
        ttl_ms = max(1, int((token.expires_at - self._clock()) * 1000))
        self.redis.set(self.prefix + key, token.to_json(), px=ttl_ms)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        name = f"{self.prefix}{key}:lock"
        owner = secrets.token_hex(16)
        waited = 0.0
        while not self.redis.set(name, owner, nx=True, px=int(self.lock_ttl * 1000)):
            if waited >= self.lock_timeout:
                raise ClientError(f"waited {self.lock_timeout:g}s for the Redis token lock")
            self._sleep(self.poll_interval)
            waited += self.poll_interval
        try:
            yield
        finally:
            self.redis.eval(_RELEASE_LUA, 1, name, owner)


# ------------------------------------------------------------------------- provider


class CredentialTokenProvider:
    """Tokens fetched with the account's appid and secret, shared through a ``TokenCache``.

    ``api="stable_token"`` (default) posts ``{"grant_type": "client_credential", "appid",
    "secret", "force_refresh": false}`` to ``/cgi-bin/stable_token``; ``api="token"`` uses
    ``GET /cgi-bin/token``. ``force_refresh: true`` (limited by WeChat to 20 a day) is used
    only when WeChat hands back the very token a datacube call just rejected.
    """

    def __init__(
        self,
        appid: str,
        secret: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api: TokenApi = "stable_token",
        cache: TokenCache | None = None,
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        refresh_margin: float = 300.0,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if api not in TOKEN_PATHS:
            raise ValueError(f"token api must be one of {', '.join(TOKEN_PATHS)}, not {api!r}")
        self.appid = appid
        self._secret = secret
        self.base_url = base_url
        self.api: TokenApi = api
        self.path = TOKEN_PATHS[api]
        self.cache: TokenCache = cache if cache is not None else FileTokenCache()
        self._owns_http = http is None
        self._http = http or httpx.Client(
            transport=transport, timeout=timeout, headers={"User-Agent": USER_AGENT}
        )
        self.refresh_margin = refresh_margin
        self.backoff = backoff or Backoff()
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._key = cache_key(base_url, appid, api)
        self._local: CachedToken | None = None
        self._stale: str | None = None
        self._lock = threading.Lock()
        self.fetches = 0
        """How many times this provider asked WeChat for a token (the rest came from the cache)."""

    def __repr__(self) -> str:
        return f"CredentialTokenProvider(appid={self.appid!r}, api={self.api!r})"

    def _usable(self, token: CachedToken | None) -> bool:
        return token is not None and token.value != self._stale and token.fresh(self._clock())

    def get_token(self) -> str:
        local = self._local
        if local is not None and self._usable(local):
            return local.value
        with self._lock:  # one fetcher per process; the cache lock does it across processes
            cached = self.cache.load(self._key)
            if cached is None or not self._usable(cached):
                with self.cache.lock(self._key):
                    cached = self.cache.load(self._key)  # someone may have fetched meanwhile
                    if cached is None or not self._usable(cached):
                        cached = self._fetch(force_refresh=False)
                        if cached.value == self._stale and self.api == "stable_token":
                            cached = self._fetch(force_refresh=True)
                        self.cache.store(self._key, cached)
            self._local = cached
            return cached.value

    def invalidate(self, token: str) -> None:
        with self._lock:
            self._stale = token

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def _fetch(self, *, force_refresh: bool) -> CachedToken:
        attempts = Attempts(0, self.backoff, self._rng)
        while True:
            try:
                return self._fetch_once(force_refresh)
            except ClientError as exc:
                retry = attempts.next(exc)
                if retry is None:
                    raise
                self._sleep(retry.delay)

    def _fetch_once(self, force_refresh: bool) -> CachedToken:
        url = join_url(self.base_url, self.path)
        self.fetches += 1
        try:
            if self.api == "stable_token":
                body = {
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self._secret,
                    "force_refresh": force_refresh,
                }
                response = self._http.post(url, content=json_body(body), headers=JSON_HEADERS)
            else:
                params = {
                    "grant_type": "client_credential",
                    "appid": self.appid,
                    "secret": self._secret,
                }
                response = self._http.get(url, params=params)
        except httpx.TransportError as exc:
            raise network_error(exc, self.path) from None
        return self._parse(decode(response, self.path))

    def _parse(self, body: dict[str, Any]) -> CachedToken:
        errcode = body.get("errcode")
        if errcode not in (None, 0):
            if errcode == 40001:
                # From the token endpoint, 40001 means the secret is wrong: no retry helps.
                raise InvalidAppSecret(40001, str(body.get("errmsg", "")), api=self.path)
            raise WeChatError.from_body(body, api=self.path)
        value, expires_in = body.get("access_token"), body.get("expires_in")
        if not isinstance(value, str) or not value or not isinstance(expires_in, int | float):
            raise ResponseError(f"{self.path} answered without access_token/expires_in")
        now = self._clock()
        margin = min(self.refresh_margin, expires_in / 2)
        return CachedToken(value, now + expires_in, now + expires_in - margin)
