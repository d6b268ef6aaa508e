"""Access-token semantics with a pinned clock, through the HTTP API (contract).

The clock is ``Settings.now``: each step builds an app at its own instant over the same
store, as if the server had been running all along. Every claim is checked by *using*
the token on a datacube endpoint at the instant in question.
"""

from __future__ import annotations

import base64
import itertools
import math
from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import String, Text, select

from msgcube.storage.db import Store
from msgcube.storage.schema import metadata
from support.api import at, datacube, errcode, get_token, new_account, shanghai, stable_token

from conftest import fresh_appid

T0 = shanghai(2026, 3, 10, 9)
SECRET = "token-secret-0123456789abcdef012"


def s(seconds: int) -> timedelta:
    return timedelta(seconds=seconds)


async def use(store: Store, token: str, when: datetime) -> int:
    """The errcode of a datacube call with ``token`` at ``when`` (0: it worked)."""
    async with at(store, when) as api:
        body = await datacube(api, token, now=when)
    if "errcode" not in body:
        assert list(body) == ["list"]
    return errcode(body)


async def token_at(store: Store, appid: str, when: datetime) -> str:
    async with at(store, when) as api:
        return await get_token(api, appid, SECRET)


async def stable_at(
    store: Store, appid: str, when: datetime, *, force: bool | None = None
) -> tuple[str, int]:
    async with at(store, when) as api:
        body = await stable_token(api, appid, SECRET, force=force)
    assert set(body) == {"access_token", "expires_in"}, body
    return str(body["access_token"]), int(body["expires_in"])


@pytest.fixture
def appid(store: Store) -> str:
    appid = fresh_appid("wxtok")
    new_account(store, appid, SECRET)
    return appid


# --------------------------------------------------------------------------- /cgi-bin/token


async def test_superseded_token_works_five_minutes_then_40001(store: Store, appid: str) -> None:
    first = await token_at(store, appid, T0)
    assert await use(store, first, T0 + s(60)) == 0
    second = await token_at(store, appid, T0 + s(60))
    assert second != first
    assert await use(store, first, T0 + s(60)) == 0
    assert await use(store, first, T0 + s(60 + 299)) == 0
    assert await use(store, first, T0 + s(60 + 300)) == 40001
    assert await use(store, first, T0 + s(60 + 3600)) == 40001
    assert await use(store, second, T0 + s(60 + 300)) == 0
    assert await use(store, second, T0 + s(60 + 7199)) == 0


async def test_overlap_is_never_extended_by_later_fetches(store: Store, appid: str) -> None:
    a = await token_at(store, appid, T0)
    b = await token_at(store, appid, T0 + s(200))  # a: until T0 + 500
    assert await use(store, a, T0 + s(249)) == 0
    c = await token_at(store, appid, T0 + s(250))  # b: until T0 + 550; a ends now
    assert await use(store, a, T0 + s(250)) == 40001
    assert await use(store, b, T0 + s(549)) == 0
    assert await use(store, b, T0 + s(550)) == 40001
    assert await use(store, c, T0 + s(550)) == 0


async def test_only_the_newest_two_tokens_ever_work(store: Store, appid: str) -> None:
    """WeChat: a new token supersedes the previous one, which keeps 5 minutes; a burst of
    fetches leaves the newest and the one before it, not every token of the burst."""
    tokens = [await token_at(store, appid, T0 + s(i)) for i in range(6)]
    outcomes = [await use(store, token, T0 + s(10)) for token in tokens]
    assert outcomes == [40001, 40001, 40001, 40001, 0, 0]
    assert await use(store, tokens[4], T0 + s(5 + 299)) == 0
    assert await use(store, tokens[4], T0 + s(5 + 300)) == 40001


async def test_expired_token_gives_42001(store: Store, appid: str) -> None:
    token = await token_at(store, appid, T0)
    assert await use(store, token, T0 + s(7199)) == 0
    assert await use(store, token, T0 + s(7200)) == 42001
    assert await use(store, token, T0 + s(86400 * 3)) == 42001


async def test_expiry_wins_over_a_longer_overlap(store: Store, appid: str) -> None:
    """A token superseded 100 s before its expiry still ends at its expiry (42001)."""
    old = await token_at(store, appid, T0)
    await token_at(store, appid, T0 + s(7100))
    assert await use(store, old, T0 + s(7199)) == 0
    assert await use(store, old, T0 + s(7200)) == 42001


async def test_token_quota_45009_then_next_day(store: Store, appid: str) -> None:
    async with at(store, T0, quota_token=3) as api:
        for _ in range(3):
            await get_token(api, appid, SECRET)
        for _ in range(2):
            response = await api.get(
                "/cgi-bin/token",
                params={"grant_type": "client_credential", "appid": appid, "secret": SECRET},
            )
            assert response.json()["errcode"] == 45009
    late = shanghai(2026, 3, 10, 23, 59, 59)
    async with at(store, late, quota_token=3) as api:
        response = await api.get(
            "/cgi-bin/token",
            params={"grant_type": "client_credential", "appid": appid, "secret": SECRET},
        )
        assert response.json()["errcode"] == 45009
    # The quota is per local day (Asia/Shanghai): midnight there resets it.
    async with at(store, shanghai(2026, 3, 11, 0, 0, 0), quota_token=3) as api:
        token = await get_token(api, appid, SECRET)
    assert await use(store, token, shanghai(2026, 3, 11, 0, 1)) == 0


async def test_other_accounts_quota_is_separate(store: Store, appid: str) -> None:
    other = fresh_appid("wxtok")
    new_account(store, other, SECRET)
    async with at(store, T0, quota_token=1) as api:
        await get_token(api, appid, SECRET)
        await get_token(api, other, SECRET)


# --------------------------------------------------------------------------- stable_token


async def test_stable_token_same_until_its_last_five_minutes(store: Store, appid: str) -> None:
    token, expires = await stable_at(store, appid, T0)
    assert expires == 7200
    for offset in (1, 600, 3600, 6899):
        again, left = await stable_at(store, appid, T0 + s(offset))
        assert again == token
        assert left == 7200 - offset  # decreasing with the clock
        assert await use(store, token, T0 + s(offset)) == 0
    # The last 5 minutes: a new token, both valid, the old one until its own expiry.
    new, left = await stable_at(store, appid, T0 + s(6900))
    assert new != token
    assert left == 7200
    assert await use(store, token, T0 + s(6900)) == 0
    assert await use(store, new, T0 + s(6900)) == 0
    same_new, left = await stable_at(store, appid, T0 + s(7000))
    assert (same_new, left) == (new, 7100)
    assert await use(store, token, T0 + s(7199)) == 0
    assert await use(store, token, T0 + s(7200)) == 42001
    assert await use(store, new, T0 + s(7200)) == 0


async def test_stable_token_expires_in_never_below_300(store: Store, appid: str) -> None:
    """Polling every 193 s for five hours: always ≥ 300 s left, and the token works."""
    seen: list[str] = []
    for offset in range(0, 5 * 3600, 193):
        when = T0 + s(offset)
        token, left = await stable_at(store, appid, when)
        assert 300 <= left <= 7200, (offset, left)
        if not seen or seen[-1] != token:
            seen.append(token)
        assert await use(store, token, when) == 0
    assert len(seen) == len(set(seen)) == 3  # rotated at the polls at 6948 s and 13896 s


async def test_stable_token_is_rederived_not_stored(store: Store, appid: str) -> None:
    """Returning 'the same token' does not need the token stored: a later app derives it."""
    token, _ = await stable_at(store, appid, T0)
    again, _ = await stable_at(store, appid, T0 + s(10))  # another app instance
    assert again == token
    assert token not in _database_text(store)


async def test_force_refresh_supersedes_immediately(store: Store, appid: str) -> None:
    token, _ = await stable_at(store, appid, T0)
    forced, left = await stable_at(store, appid, T0 + s(100), force=True)
    assert forced != token
    assert left == 7200
    assert await use(store, token, T0 + s(100)) == 40001
    assert await use(store, forced, T0 + s(100)) == 0
    normal, left = await stable_at(store, appid, T0 + s(110), force=False)
    assert (normal, left) == (forced, 7190)


async def test_force_refresh_30_seconds_apart(store: Store, appid: str) -> None:
    first, _ = await stable_at(store, appid, T0, force=True)
    too_soon, left = await stable_at(store, appid, T0 + s(29), force=True)
    assert (too_soon, left) == (first, 7171)  # unchanged
    assert await use(store, first, T0 + s(29)) == 0
    second, left = await stable_at(store, appid, T0 + s(30), force=True)
    assert second != first
    assert left == 7200
    assert await use(store, first, T0 + s(30)) == 40001


async def test_force_refresh_at_most_20_a_day(store: Store, appid: str) -> None:
    tokens = []
    for i in range(20):
        token, left = await stable_at(store, appid, T0 + s(31 * i), force=True)
        assert left == 7200
        tokens.append(token)
    assert len(set(tokens)) == 20
    when = T0 + s(31 * 20)
    refused, left = await stable_at(store, appid, when, force=True)
    assert refused == tokens[-1]
    assert left == 7200 - 31  # unchanged: the 20th token, issued 31 s earlier
    assert await use(store, refused, when) == 0
    # Still refused later the same local day, allowed again after local midnight.
    later, _ = await stable_at(store, appid, shanghai(2026, 3, 10, 23, 59), force=True)
    assert later != refused  # the 20th expired long ago: a normal (unforced) new token
    again, _ = await stable_at(store, appid, shanghai(2026, 3, 10, 23, 59, 40), force=True)
    assert again == later
    next_day, left = await stable_at(store, appid, shanghai(2026, 3, 11, 0, 0, 5), force=True)
    assert next_day != later
    assert left == 7200
    assert await use(store, later, shanghai(2026, 3, 11, 0, 0, 5)) == 40001


async def test_stable_and_normal_tokens_are_independent(store: Store, appid: str) -> None:
    normal = await token_at(store, appid, T0)
    stable, _ = await stable_at(store, appid, T0 + s(10))
    newer = await token_at(store, appid, T0 + s(20))  # supersedes `normal` only
    assert await use(store, stable, T0 + s(20 + 3600)) == 0
    assert await use(store, normal, T0 + s(20 + 300)) == 40001
    forced, _ = await stable_at(store, appid, T0 + s(60), force=True)  # supersedes `stable` only
    assert await use(store, stable, T0 + s(60)) == 40001
    assert await use(store, newer, T0 + s(60)) == 0
    assert await use(store, newer, T0 + s(3600)) == 0
    assert await use(store, forced, T0 + s(3600)) == 0
    again, _ = await stable_at(store, appid, T0 + s(3600))
    assert again == forced


async def test_tokens_are_bound_to_their_account(store: Store, appid: str) -> None:
    other = fresh_appid("wxtok")
    new_account(store, other, SECRET)
    mine = await token_at(store, appid, T0)
    theirs = await token_at(store, other, T0 + s(1))
    assert await use(store, mine, T0 + s(400)) == 0  # another account's fetch supersedes nothing
    assert await use(store, theirs, T0 + s(400)) == 0
    mine_stable, _ = await stable_at(store, appid, T0)
    their_stable, _ = await stable_at(store, other, T0)
    assert mine_stable != their_stable


# --------------------------------------------------------------------------- storage, randomness


def _database_text(store: Store) -> str:
    """Every text cell of every table, one big string."""
    parts: list[str] = []
    with store.read() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text)]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                parts.extend(str(v) for v in row if v is not None)
    return "\n".join(parts)


async def test_only_hashes_are_stored(store: Store, appid: str) -> None:
    tokens = [await token_at(store, appid, T0 + s(i)) for i in range(3)]
    tokens.append((await stable_at(store, appid, T0))[0])
    tokens.append((await stable_at(store, appid, T0 + s(40), force=True))[0])
    everything = _database_text(store)
    for token in tokens:
        assert token not in everything
        assert token[:40] not in everything  # not even a prefix
    assert SECRET not in everything
    with store.read() as conn:
        hashes = [r[0] for r in conn.execute(select(metadata.tables["access_tokens"].c.token_hash))]
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)


async def test_tokens_are_long_random_and_unique(store: Store, appid: str) -> None:
    tokens: list[str] = []
    async with at(store, T0, quota_token=10_000) as api:
        for _ in range(150):
            tokens.append(await get_token(api, appid, SECRET))
    for i in range(20):
        tokens.append((await stable_at(store, appid, T0 + s(31 * i), force=True))[0])
    assert len(set(tokens)) == len(tokens)
    for token in tokens:
        assert 22 <= len(token) <= 512
        assert all(c.isascii() and (c.isalnum() or c in "-_") for c in token)  # URL-safe
        # ≥ 128 bits: at most 6 bits per URL-safe character.
        assert len(token) * 6 >= 128
    normal = tokens[:150]
    # No shared structure: no common prefix or suffix beyond chance, characters uniform.
    for a, b in itertools.pairwise(normal):
        assert a[:6] != b[:6] or a[6:12] != b[6:12]
    counts = Counter("".join(normal))
    total = sum(counts.values())
    entropy = -sum(n / total * math.log2(n / total) for n in counts.values())
    assert entropy > 5.9  # log2(64) = 6 for uniform URL-safe base64
    # Decoded, the normal tokens carry ≥ 16 random bytes each and never repeat any 8.
    raw = [base64.urlsafe_b64decode(t + "=" * (-len(t) % 4)) for t in normal]
    assert all(len(r) >= 16 for r in raw)
    assert len({r[:8] for r in raw}) == len(raw)
