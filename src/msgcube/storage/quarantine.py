"""The quarantine: pushes that carried a valid signature but could not be stored.

The contract says nothing acknowledged is lost and nothing signed is silently dropped: a
push whose signature was right but whose body could not be parsed, decrypted or
validated is answered 400 *and* kept here, verbatim, with the reason and the query
string (``timestamp``, ``nonce``, ``encrypt_type`` and both signatures), so that
``msgcube quarantine replay`` can run it through the same gate again once the cause is
fixed — typically a wrong or rotated EncodingAESKey.

Rows are never deleted by msgcube; ``replayed_at`` marks those whose record has since
been stored (or found to be a duplicate), so a second replay skips them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select, update

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


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A push to quarantine; what the callback hands the writer."""

    appid: str
    received_at: int
    reason: str
    query: str
    body: bytes = field(repr=False)


def add_entries(conn: Connection, entries: Sequence[NewEntry]) -> None:
    """Insert quarantined pushes inside the caller's write transaction."""
    if not entries:
        return
    conn.execute(
        quarantine.insert(),
        [
            {"appid": e.appid, "received_at": e.received_at, "reason": e.reason[:2000],
             "query": e.query, "body": e.body}
            for e in entries
        ],
    )  # fmt: skip


def add_entry(conn: Connection, entry: NewEntry) -> int:
    """Insert one quarantined push; returns its id."""
    result = conn.execute(
        quarantine.insert().values(
            appid=entry.appid, received_at=entry.received_at, reason=entry.reason[:2000],
            query=entry.query, body=entry.body,
        )
    )  # fmt: skip
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
            id=r.id, appid=r.appid, received_at=r.received_at, reason=r.reason, query=r.query,
            body=b"", body_size=int(r.body_size or 0), replayed_at=r.replayed_at,
        )
        for r in conn.execute(stmt)
    ]  # fmt: skip


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


def count_entries(conn: Connection, appid: str | None = None) -> int:
    stmt = select(func.count()).select_from(quarantine)
    if appid is not None:
        stmt = stmt.where(quarantine.c.appid == appid)
    return int(conn.execute(stmt).scalar_one())


def _full(r: Any) -> QuarantineEntry:
    body = bytes(r.body)
    return QuarantineEntry(
        id=r.id, appid=r.appid, received_at=r.received_at, reason=r.reason, query=r.query,
        body=body, body_size=len(body), replayed_at=r.replayed_at,
    )  # fmt: skip
