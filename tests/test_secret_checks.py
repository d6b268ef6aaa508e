"""AppSecret checks (``auth/secret_checks.py``): slow, off the event loop, bounded, and
paid once per process for a secret that matched; rows from before the slow scheme are
rewritten by their first match."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select, update

from msgcube.auth.secret_checks import SecretChecks
from msgcube.errors import ApiError
from msgcube.storage.accounts import SECRET_KEY_NAME, Account, add_account
from msgcube.storage.db import Store
from msgcube.storage.schema import accounts
from msgcube.storage.secret_hashes import NO_SECRET, keyed_secret_hash
from msgcube.storage.server_secrets import server_secret
from support.app_secrets import secret_ok

from conftest import fresh_appid

SECRET = "0123456789abcdef0123456789abcdef"
NOW = int(datetime(2026, 11, 30, tzinfo=UTC).timestamp())


def _account(store: Store) -> Account:
    with store.write() as conn:
        return add_account(conn, appid=fresh_appid("wxsc"), secret=SECRET, tz="UTC", now=NOW)


def _stored(store: Store, account: Account) -> str:
    with store.read() as conn:
        query = select(accounts.c.secret_hash).where(accounts.c.id == account.id)
        return str(conn.execute(query).scalar_one())


async def test_the_slow_check_leaves_the_event_loop_free(store: Store) -> None:
    account = _account(store)
    checks = SecretChecks()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    ticker = asyncio.ensure_future(tick())
    await asyncio.sleep(0.01)
    ticks = 0
    try:
        ok = await checks.matches(store, accounts, account.id, account.secret_hash, SECRET + "x")
    finally:
        ticker.cancel()
    assert ok is False
    # scrypt takes tens of milliseconds; run on the loop, it would let the ticker run once.
    assert ticks >= 3


async def test_a_matched_secret_is_checked_slowly_once_per_process(store: Store) -> None:
    account = _account(store)
    checks = SecretChecks()
    started = time.perf_counter()
    assert await checks.matches(store, accounts, account.id, account.secret_hash, SECRET)
    first = time.perf_counter() - started
    started = time.perf_counter()
    assert await checks.matches(store, accounts, account.id, account.secret_hash, SECRET)
    again = time.perf_counter() - started
    assert again < first / 3, (first, again)
    # Remembered for this stored value and this secret only.
    assert not await checks.matches(store, accounts, account.id, account.secret_hash, SECRET[:-1])
    assert not await checks.matches(store, accounts, None, None, SECRET)


async def test_checks_beyond_the_queue_are_answered_busy(store: Store) -> None:
    account = _account(store)

    class Narrow(SecretChecks):
        SLOTS = 1
        QUEUE = 1

    checks = Narrow()
    results = await asyncio.gather(
        *(
            checks.matches(store, accounts, account.id, account.secret_hash, SECRET + str(i))
            for i in range(3)
        ),
        return_exceptions=True,
    )
    assert results[0] is False
    assert all(isinstance(r, ApiError) and r.errcode == -1 for r in results[1:]), results
    # Once the queue drained, checks are taken again.
    assert await checks.matches(store, accounts, account.id, account.secret_hash, SECRET)


async def test_a_row_from_before_the_slow_scheme_is_rewritten_by_its_first_match(
    store: Store,
) -> None:
    account = _account(store)
    with store.write() as conn:
        legacy = keyed_secret_hash(server_secret(conn, SECRET_KEY_NAME), SECRET)
        conn.execute(update(accounts).where(accounts.c.id == account.id).values(secret_hash=legacy))
    checks = SecretChecks()
    assert not await checks.matches(store, accounts, account.id, legacy, "wrong")
    assert _stored(store, account) == legacy  # a wrong secret changes nothing
    assert await checks.matches(store, accounts, account.id, legacy, SECRET)
    fresh = _stored(store, account)
    assert fresh.startswith("s1$")
    with store.read() as conn:
        assert secret_ok(conn, fresh, SECRET)
        assert not secret_ok(conn, fresh, "wrong")


@pytest.mark.parametrize("guess", ["", NO_SECRET, SECRET, "0" * 64])
async def test_an_account_without_an_appsecret_matches_nothing(store: Store, guess: str) -> None:
    account = _account(store)
    checks = SecretChecks()
    assert not await checks.matches(store, accounts, account.id, NO_SECRET, guess)
    with store.read() as conn:
        assert not secret_ok(conn, NO_SECRET, guess)
