"""The API's per-process cache of token checks is exact: every change shows on the next call.

Two ``CallerCache`` instances over one database stand for two workers; each change is
made the way an operator or another process makes it (its own write transaction through
the auth/storage functions) and the database triggers of migration 0010 move the
account's ``auth_gen``. Both workers must see the change on their very next lookup,
without any time passing. (The same over a real ``msgcube serve --workers 2``:
``test_caller_cache_workers.py``.)
"""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import text

from msgcube.auth.caller_cache import CallerCache
from msgcube.auth.platforms import authorize_platform, exchange_refresh_token, register_platform
from msgcube.auth.tokens import issue_access_token
from msgcube.storage.accounts import Account, set_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import Authorization
from msgcube.storage.tokens import TokenChecks, hash_token, supersede
from msgcube.storage.usage import set_daily_limit_override
from support.api import new_account

from conftest import fresh_appid

NOW = 1_773_108_000  # 2026-03-10 10:00 +08:00
SECRET = "cache-secret-0123456789abcdef01"


def own_token(store: Store, account: Account) -> str:
    with store.write() as conn:
        return issue_access_token(
            conn, account, NOW, datetime(2026, 3, 10).date(), 10**6
        ).access_token


def looked_up(workers: list[CallerCache], store: Store, token: str) -> list[TokenChecks]:
    """Each worker's view of ``token``; every one must have found it."""
    conn = store.hot_reader()
    found = [w.checks(conn, token) for w in workers]
    assert all(f is not None for f in found)
    return [f for f in found if f is not None]


@pytest.fixture
def workers() -> list[CallerCache]:
    return [CallerCache(), CallerCache()]


def test_an_unchanged_account_is_served_from_memory(
    store: Store, workers: list[CallerCache]
) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    token = own_token(store, account)
    first = looked_up(workers, store, token)
    again = looked_up(workers, store, token)
    assert [a is f for a, f in zip(again, first, strict=True)] == [True, True]
    assert first[0].account is not None and first[0].account.id == account.id


def test_a_token_cut_short_is_seen_at_once(store: Store, workers: list[CallerCache]) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    token = own_token(store, account)
    assert {c.token.valid_until for c in looked_up(workers, store, token)} == {None}
    with store.write() as conn:
        assert supersede(conn, account.id, "token", NOW) == 1
    assert {c.token.valid_until for c in looked_up(workers, store, token)} == {NOW}


def test_whitelist_verification_secret_and_quota_changes_are_seen_at_once(
    store: Store, workers: list[CallerCache]
) -> None:
    appid = fresh_appid("wxcache")
    account = new_account(store, appid, SECRET)
    token = own_token(store, account)
    looked_up(workers, store, token)
    with store.write() as conn:
        set_account(conn, appid, ip_whitelist="10.1.2.3")
    assert {c.account.ip_whitelist for c in looked_up(workers, store, token) if c.account} == {
        ("10.1.2.3",)
    }
    with store.write() as conn:
        set_account(conn, appid, verified=False)
    assert {c.account.verified for c in looked_up(workers, store, token) if c.account} == {False}
    before = {c.account.secret_hash for c in looked_up(workers, store, token) if c.account}
    with store.write() as conn:
        set_account(conn, appid, secret="another-secret-0123456789abcdef")
    after = {c.account.secret_hash for c in looked_up(workers, store, token) if c.account}
    assert len(after) == 1 and after != before
    for limit in (7, 0, None):
        with store.write() as conn:
            set_daily_limit_override(conn, account.id, limit)
        assert {c.quota_limit for c in looked_up(workers, store, token)} == {limit}


def test_new_statistics_move_the_cached_accounts_stats_gen(
    store: Store, workers: list[CallerCache]
) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    token = own_token(store, account)
    assert {c.account.stats_gen for c in looked_up(workers, store, token) if c.account} == {0}
    with store.write() as conn:  # what rollup_state.mark_dirty does for a closed period
        conn.execute(
            text("UPDATE accounts SET stats_gen = stats_gen + 1 WHERE id = :id"),
            {"id": account.id},
        )
    assert {c.account.stats_gen for c in looked_up(workers, store, token) if c.account} == {1}


def test_a_deleted_account_or_token_is_not_found_any_more(
    store: Store, workers: list[CallerCache]
) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    token, other = own_token(store, account), own_token(store, account)
    looked_up(workers, store, token)
    looked_up(workers, store, other)
    with store.write() as conn:
        conn.execute(
            text("DELETE FROM access_tokens WHERE token_hash = :h"), {"h": hash_token(token)}
        )
    conn = store.hot_reader()
    assert [w.checks(conn, token) for w in workers] == [None, None]
    with store.write() as conn:
        conn.execute(text("DELETE FROM accounts WHERE id = :id"), {"id": account.id})
    conn = store.hot_reader()
    assert {(c.account, c.auth_gen) for c in (w.checks(conn, other) for w in workers) if c} == {
        (None, None)
    }


def grants(workers: list[CallerCache], store: Store, token: str) -> list[Authorization | None]:
    conn = store.hot_reader()
    out = []
    for w in workers:
        checks = w.checks(conn, token)
        assert checks is not None and checks.token.platform_id is not None
        out.append(w.grant(conn, checks.token.platform_id, checks))
    return out


def test_a_narrowed_or_revoked_grant_is_seen_at_once(
    store: Store, workers: list[CallerCache]
) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    with store.write() as conn:
        platform = register_platform(
            conn, component_appid=fresh_appid("wxcomp"), secret="p" * 32, now=NOW
        )
        _, refresh = authorize_platform(conn, platform, account, [1, 2, 3], NOW)
        token = exchange_refresh_token(
            conn, platform, account, refresh, NOW
        ).authorizer_access_token
    assert {g.func_ids for g in grants(workers, store, token) if g} == {(1, 2, 3)}
    assert {g.func_ids for g in grants(workers, store, token) if g} == {(1, 2, 3)}
    with store.write() as conn:
        authorize_platform(conn, platform, account, [2, 3], NOW)
    assert {g.func_ids for g in grants(workers, store, token) if g} == {(2, 3)}
    with store.write() as conn:
        conn.execute(
            text("UPDATE authorizations SET revoked_at = :now WHERE account_id = :id"),
            {"now": NOW, "id": account.id},
        )
    assert {g.active for g in grants(workers, store, token) if g} == {False}


def test_the_cache_is_bounded(store: Store) -> None:
    account = new_account(store, fresh_appid("wxcache"), SECRET)
    cache = CallerCache(size=3)
    tokens = [own_token(store, account) for _ in range(5)]
    conn = store.hot_reader()
    for token in tokens:
        assert cache.checks(conn, token) is not None
    assert len(cache._checks) == 3
