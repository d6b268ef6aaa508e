"""The quarantine: pushes that carried a valid signature but could not be stored.

The contract says nothing acknowledged is lost and nothing signed is silently dropped: a
push whose signature was right but whose body could not be parsed, decrypted or
validated is answered 400 *and* kept here, verbatim, with the reason and the query
string (``timestamp``, ``nonce``, ``encrypt_type`` and both signatures), so that
``msgcube quarantine replay`` can run it through the same gate again once the cause is
fixed — typically a wrong or rotated EncodingAESKey.

``replayed_at`` marks those whose record has since been stored (or found to be a
duplicate), so a second replay skips them.

The quarantine is bounded per account (``QuarantineLimits``): entries older than the
retention are dropped on the next insert (and by ``msgcube quarantine prune``), and
once an account holds its maximum count or bytes, *new* entries are refused — the
earliest entries of an incident are the informative ones, and dropping the oldest would
let anyone who can fill the quarantine erase what is already there. A refusal is not
silent: the push is answered 503 and logged, so WeChat retries and the operator sees it.
A signed request is kept at most once (``signed_by``): replaying one captured query
string with other bodies adds nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, delete, func, select, update

from msgcube.storage.schema import quarantine


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    """One quarantined push. ``body`` is omitted (``b""``) by ``list_entries``."""

    id: int
    appid: str
    received_at: int
    reason: str
    query: str
    body: bytes = field(repr=False)
    body_size: int
    replayed_at: int | None
    component_appid: str = ""  # received on this platform's message URL


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A push to quarantine; what the callback hands the writer.

    ``signed_by`` is the signature that authenticates the request (it appears in
    ``query``); an entry whose signature is already kept is not stored again.
    """

    appid: str
    received_at: int
    reason: str
    query: str
    body: bytes = field(repr=False)
    signed_by: str = ""
    component_appid: str = ""  # received on this platform's message URL


@dataclass(frozen=True, slots=True)
class QuarantineLimits:
    """Per-account bounds of the quarantine; 0 means "no bound" for each."""

    max_entries: int = 1000
    max_bytes: int = 16 * 2**20
    retention_days: int = 30


class Kept(enum.Enum):
    """What became of an entry handed to ``add_entries``."""

    STORED = "stored"
    DUPLICATE = "duplicate"  # the same signed request is already kept
    FULL = "full"  # the account's quarantine is at its bound


_DAY = 86_400


def add_entries(
    conn: Connection, entries: Sequence[NewEntry], limits: QuarantineLimits, now: int
) -> list[Kept]:
    """Insert quarantined pushes inside the caller's write transaction, within ``limits``.

    Expired entries of the accounts concerned are pruned first, so a full quarantine
    frees itself as its entries age. Returns one ``Kept`` per entry, in order.
    """
    outcomes: list[Kept] = []
    usage: dict[str, list[int]] = {}
    seen: set[tuple[str, str]] = set()
    for e in entries:
        if e.appid not in usage:
            if limits.retention_days:
                prune_entries(conn, appid=e.appid, before=now - limits.retention_days * _DAY)
            usage[e.appid] = _usage(conn, e.appid)
        used = usage[e.appid]
        if e.signed_by and ((e.appid, e.signed_by) in seen or _holds(conn, e)):
            outcomes.append(Kept.DUPLICATE)
            continue
        over_count = limits.max_entries and used[0] + 1 > limits.max_entries
        over_bytes = limits.max_bytes and used[1] + len(e.body) > limits.max_bytes
        if over_count or over_bytes:
            outcomes.append(Kept.FULL)
            continue
        add_entry(conn, e)
        used[0] += 1
        used[1] += len(e.body)
        seen.add((e.appid, e.signed_by))
        outcomes.append(Kept.STORED)
    return outcomes


def _usage(conn: Connection, appid: str) -> list[int]:
    """[entries, body bytes] the account's quarantine holds."""
    row = conn.execute(
        select(func.count(), func.coalesce(func.sum(func.length(quarantine.c.body)), 0)).where(
            quarantine.c.appid == appid
        )
    ).one()
    return [int(row[0]), int(row[1])]


def _holds(conn: Connection, entry: NewEntry) -> bool:
    """Whether an entry signed by the same signature is kept (it is part of its query)."""
    stmt = select(quarantine.c.id).where(
        quarantine.c.appid == entry.appid,
        quarantine.c.query.contains(entry.signed_by, autoescape=True),
    )
    return conn.execute(stmt.limit(1)).first() is not None


def prune_entries(
    conn: Connection,
    *,
    appid: str | None = None,
    before: int | None = None,
    replayed_only: bool = False,
) -> int:
    """Delete entries (of ``appid``, received before ``before``, replayed); returns how many."""
    stmt = delete(quarantine)
    if appid is not None:
        stmt = stmt.where(quarantine.c.appid == appid)
    if before is not None:
        stmt = stmt.where(quarantine.c.received_at < before)
    if replayed_only:
        stmt = stmt.where(quarantine.c.replayed_at.is_not(None))
    return int(conn.execute(stmt).rowcount or 0)


def add_entry(conn: Connection, entry: NewEntry) -> int:
    """Insert one quarantined push, unconditionally; returns its id."""
    result = conn.execute(
        quarantine.insert().values(
            appid=entry.appid,
            received_at=entry.received_at,
            reason=entry.reason[:2000],
            query=entry.query,
            body=entry.body,
            component_appid=entry.component_appid,
        )
    )
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


_LIST_COLUMNS = (
    quarantine.c.id,
    quarantine.c.appid,
    quarantine.c.received_at,
    quarantine.c.reason,
    quarantine.c.query,
    func.length(quarantine.c.body).label("body_size"),
    quarantine.c.replayed_at,
    quarantine.c.component_appid,
)


def list_entries(
    conn: Connection,
    *,
    appid: str | None = None,
    pending_only: bool = False,
    limit: int | None = None,
) -> list[QuarantineEntry]:
    """Entries newest first, without their bodies (they can be 64 KiB each)."""
    stmt = select(*_LIST_COLUMNS).order_by(quarantine.c.id.desc())
    if appid is not None:
        stmt = stmt.where(quarantine.c.appid == appid)
    if pending_only:
        stmt = stmt.where(quarantine.c.replayed_at.is_(None))
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        QuarantineEntry(
            id=r.id,
            appid=r.appid,
            received_at=r.received_at,
            reason=r.reason,
            query=r.query,
            body=b"",
            body_size=int(r.body_size or 0),
            replayed_at=r.replayed_at,
            component_appid=r.component_appid,
        )
        for r in conn.execute(stmt)
    ]


def get_entries(conn: Connection, ids: Sequence[int]) -> list[QuarantineEntry]:
    """The entries with these ids (bodies included), in id order; unknown ids are skipped."""
    if not ids:
        return []
    rows = conn.execute(
        select(quarantine).where(quarantine.c.id.in_(list(ids))).order_by(quarantine.c.id)
    )
    return [_full(r) for r in rows]


def pending_ids(conn: Connection, appid: str | None = None) -> list[int]:
    """Ids of entries not yet replayed successfully, oldest first."""
    stmt = (
        select(quarantine.c.id).where(quarantine.c.replayed_at.is_(None)).order_by(quarantine.c.id)
    )
    if appid is not None:
        stmt = stmt.where(quarantine.c.appid == appid)
    return list(conn.execute(stmt).scalars())


def mark_replayed(conn: Connection, entry_id: int, replayed_at: int) -> None:
    conn.execute(
        update(quarantine).where(quarantine.c.id == entry_id).values(replayed_at=replayed_at)
    )


def set_reason(conn: Connection, entry_id: int, reason: str) -> None:
    """Record why the latest replay still failed (the cause may have changed)."""
    conn.execute(update(quarantine).where(quarantine.c.id == entry_id).values(reason=reason[:2000]))


def _full(r: Any) -> QuarantineEntry:
    body = bytes(r.body)
    return QuarantineEntry(
        id=r.id,
        appid=r.appid,
        received_at=r.received_at,
        reason=r.reason,
        query=r.query,
        body=body,
        body_size=len(body),
        replayed_at=r.replayed_at,
        component_appid=r.component_appid,
    )
