"""Which periods are dirty: a sequence number per (account, period, start).

Ingest bumps ``dirty_seq`` in the same transaction that stores the data; the rollup
reads ``dirty_seq`` before it computes and records it as ``done_seq`` afterwards. A period
is pending while ``dirty_seq > done_seq``, so data that lands *during* a rollup leaves its
period pending instead of being lost — no lock between ingest and rollup is needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from msgcube.domain.endpoints import Period
from msgcube.domain.periods import PeriodKey, has_ended
from msgcube.storage.dialect import upsert
from msgcube.storage.schema import accounts, rollup_state


def mark_dirty(conn: Connection, account_id: int, keys: Iterable[PeriodKey], today: date) -> int:
    """Bump the dirty sequence of each key; returns how many keys were marked.

    When a period that has already ended becomes dirty, the account's ``stats_gen`` moves
    too, voiding every cached answer computed before (today's periods are never served,
    so live traffic leaves caches alone).
    """
    keys = set(keys)
    if conn.dialect.name == "sqlite":
        # Straight to the driver: every push batch runs this, and SQLAlchemy's execution
        # of the upsert cost ~8 times SQLite's (bench/push.py's per-commit CPU).
        dbapi: Any = conn.connection.dbapi_connection
        if any(has_ended(p, s, today) for p, s in keys):
            dbapi.execute(_SQLITE_BUMP_STATS_GEN, (account_id,))
        marks = [(account_id, p.value, s.isoformat()) for p, s in sorted(keys)]
        if marks:
            dbapi.executemany(_SQLITE_MARK, marks)
        return len(marks)
    if any(has_ended(p, s, today) for p, s in keys):
        conn.execute(_BUMP_STATS_GEN, {"account_id": account_id})
    rows = [
        {"account_id": account_id, "period": p.value, "start": s, "dirty_seq": 1, "done_seq": 0}
        for p, s in sorted(keys)
    ]
    if rows:
        conn.execute(_mark_statement(conn), rows)
    return len(rows)


# Built once (per dialect): every push batch marks its days, and building the upsert
# anew each time cost more than running it (bench/push.py).
_BUMP_STATS_GEN = (
    update(accounts)
    .where(accounts.c.id == bindparam("account_id"))
    .values(stats_gen=accounts.c.stats_gen + 1)
)
_MARK: dict[str, Any] = {}
_SQLITE_BUMP_STATS_GEN = "UPDATE accounts SET stats_gen = stats_gen + 1 WHERE id = ?"
_SQLITE_MARK = (
    "INSERT INTO rollup_state (account_id, period, start, dirty_seq, done_seq)"
    " VALUES (?, ?, ?, 1, 0)"
    " ON CONFLICT (account_id, period, start) DO UPDATE SET dirty_seq = dirty_seq + 1"
)


def _mark_statement(conn: Connection) -> Any:
    dialect = conn.dialect.name
    stmt = _MARK.get(dialect)
    if stmt is None:
        stmt = _MARK[dialect] = upsert(
            conn,
            rollup_state,
            ["account_id", "period", "start"],
            {"dirty_seq": rollup_state.c.dirty_seq + 1},
        )
    return stmt


def read_states(
    conn: Connection, account_id: int, periods: Iterable[Period] | None = None
) -> dict[PeriodKey, tuple[int, int]]:
    """(period, start) → (dirty_seq, done_seq) for one account."""
    stmt = select(
        rollup_state.c.period,
        rollup_state.c.start,
        rollup_state.c.dirty_seq,
        rollup_state.c.done_seq,
    ).where(rollup_state.c.account_id == account_id)
    if periods is not None:
        stmt = stmt.where(rollup_state.c.period.in_([p.value for p in periods]))
    return {(Period(r.period), r.start): (r.dirty_seq, r.done_seq) for r in conn.execute(stmt)}


def mark_done(
    conn: Connection, account_id: int, done: dict[PeriodKey, int], computed_at: int | None
) -> None:
    """Record that each period was computed from data up to its dirty sequence ``seq``.

    ``computed_at`` is the caller's clock reading (Unix seconds), ``None`` when it has none.
    """
    if not done:
        return
    rows = [
        {
            "account_id": account_id,
            "period": p.value,
            "start": s,
            "dirty_seq": seq,
            "done_seq": seq,
            "computed_at": computed_at,
        }
        for (p, s), seq in sorted(done.items())  # key order, as ``mark_dirty``'s marks
    ]
    stmt = upsert(
        conn,
        rollup_state,
        ["account_id", "period", "start"],
        {"done_seq": lambda ex: ex.done_seq, "computed_at": lambda ex: ex.computed_at},
    )
    conn.execute(stmt, rows)


def not_pending(conn: Connection, account_id: int, keys: Iterable[PeriodKey]) -> set[PeriodKey]:
    """Those of ``keys`` that are not pending (never marked, or computed since).

    With ``analytics_db`` a batch lands in ClickHouse before its marks commit here; if
    that commit fails, WeChat's retry (or a re-import) finds the rows stored. Whether a
    period computed since saw them, ``db`` cannot tell — the rows became visible some
    time after their ``received_at`` — so each period they touch that is not pending is
    marked again: one recompute too many for a plain duplicate of a computed period,
    never one too few. A pending period is computed after now, so it sees them.
    """
    keys = set(keys)
    if not keys:
        return set()
    rows = conn.execute(
        select(
            rollup_state.c.period,
            rollup_state.c.start,
            rollup_state.c.dirty_seq,
            rollup_state.c.done_seq,
        ).where(
            rollup_state.c.account_id == account_id,
            rollup_state.c.start >= min(s for _, s in keys),
            rollup_state.c.start <= max(s for _, s in keys),
        )
    )
    pending = {(Period(r.period), r.start) for r in rows if r.dirty_seq > r.done_seq}
    return keys - pending
