"""Tables that keep a local day (and hour) derived from a Unix time, and re-deriving them.

Ingest stores each row's local day and hour in the account's time zone, so rollups are
plain GROUP BYs. When an account's time zone changes, every such column is derived again
from the stored time (``rederive``). A new table of this kind joins with one line in
``LOCAL_TIME_TABLES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import Connection, Table, bindparam, select, update

from msgcube.domain.periods import local_day_hour
from msgcube.storage.records import rebuild_user_layers
from msgcube.storage.schema import events, messages, relay_calls


@dataclass(frozen=True, slots=True)
class LocalTimes:
    """``table`` has one integer primary key, ``account_id``, a Unix time ``time``, its
    local ``day`` and maybe ``hour``."""

    table: Table
    time: str
    day: str = "day"
    hour: str | None = "hour"


LOCAL_TIME_TABLES: tuple[LocalTimes, ...] = (
    LocalTimes(messages, "create_time"),
    LocalTimes(events, "create_time", hour=None),
    LocalTimes(relay_calls, "received_at"),
)

CHUNK = 5000


def rederive(conn: Connection, account_id: int, tz: str) -> set[date]:
    """Derive every local day/hour of the account again in ``tz``.

    Returns the days that held rows before or hold them now: those periods must be
    computed again.
    """
    touched: set[date] = set()
    for spec in LOCAL_TIME_TABLES:
        touched |= _rederive(conn, spec, account_id, tz)
    rebuild_user_layers(conn, account_id)  # per-sender rows are keyed by the local day
    return touched


def _rederive(conn: Connection, spec: LocalTimes, account_id: int, tz: str) -> set[date]:
    """One table, read in primary-key order a chunk at a time (memory stays flat)."""
    t = spec.table
    (key,) = t.primary_key.columns  # one integer key (``id``) per row
    day = t.c[spec.day]
    hour = t.c[spec.hour] if spec.hour else None
    wanted = [key, t.c[spec.time], day, *([hour] if hour is not None else [])]
    values: dict[str, object] = {spec.day: bindparam("v_day")}
    if spec.hour:
        values[spec.hour] = bindparam("v_hour")
    stmt = update(t).where(key == bindparam("k")).values(values)
    touched: set[date] = set()
    last: int | None = None
    while True:
        query = select(*wanted).where(t.c.account_id == account_id).order_by(key).limit(CHUNK)
        if last is not None:
            query = query.where(key > last)
        rows = conn.execute(query).all()
        if not rows:
            return touched
        last = rows[-1][0]
        changes: list[dict[str, object]] = []
        for pk, when, old_day, *old_hour in rows:
            new_day, new_hour = local_day_hour(int(when), tz)
            touched.update((old_day, new_day))
            if new_day != old_day or (old_hour and old_hour[0] != new_hour):
                change: dict[str, object] = {"k": pk, "v_day": new_day}
                if hour is not None:
                    change["v_hour"] = new_hour
                changes.append(change)
        if changes:
            conn.execute(stmt, changes)
