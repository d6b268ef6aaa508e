"""``Client`` and ``AsyncClient`` are written twice (as httpx does): their constructors must agree.

The blocking and the asyncio client take the same options with the same defaults, in the
same order, so code moves between them by adding ``async``. The only differences are the
ones asyncio needs, listed here: a test that fails names the option that drifted.
"""

from __future__ import annotations

import asyncio
import inspect
import time

from msgcube.client import AsyncClient, Client

ASYNC_ONLY = {"concurrency", "token_transport"}
"""Options only the asyncio client has: windows fetched at once, a blocking token transport."""

OWN_DEFAULTS = {"sleep": (time.sleep, asyncio.sleep)}
"""Options whose default differs by nature (blocking vs awaitable), as (Client, AsyncClient)."""


def params(cls: type) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(cls.__init__).parameters)


def test_same_options_in_the_same_order() -> None:
    sync, async_ = params(Client), params(AsyncClient)
    assert list(sync) == [name for name in async_ if name not in ASYNC_ONLY]
    assert set(async_) >= ASYNC_ONLY


def test_same_kinds_and_defaults() -> None:
    sync, async_ = params(Client), params(AsyncClient)
    for name, p in sync.items():
        q = async_[name]
        assert p.kind == q.kind, name
        if name in OWN_DEFAULTS:
            assert (p.default, q.default) == OWN_DEFAULTS[name], name
        else:
            assert p.default == q.default, name


def test_the_documented_option_lists_are_current() -> None:
    """A difference that disappears must leave the lists above too (no stale exceptions)."""
    sync, async_ = params(Client), params(AsyncClient)
    assert not ASYNC_ONLY & set(sync)
    assert all(sync[n].default != async_[n].default for n in OWN_DEFAULTS)
