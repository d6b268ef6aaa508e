"""The ``list`` an endpoint serves: validation, freshness, then an index read.

This is the library function behind the API, ``msgcube stats`` and the dashboard, so the
three can never disagree. It validates the range (SPEC §1.1: 61500, 61501), refuses
yesterday before ``ready_at`` (61503), computes any requested period that is still
pending (late data, a day that has just ended) and reads the finished rows.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, select

from msgcube.domain.endpoints import Endpoint, Period, RowKind
from msgcube.domain.periods import (
    local_today,
    period_last_day,
    reported_periods,
    validate_range,
    zone,
)
from msgcube.errors import ApiError
from msgcube.rollup.engine import pending_keys, refresh
from msgcube.rollup.interface import read_interface_rows
from msgcube.rollup.plan import Key
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store
from msgcube.storage.schema import stat_dist, stat_summary

Row = dict[str, Any]


def served_list(
    store: Store,
    account: Account,
    ep: Endpoint,
    begin_date: str,
    end_date: str,
    now: datetime,
    *,
    span_profile: str = "classic",
    ready_at: time = time(0, 0),
) -> list[Row]:
    """Exactly the ``list`` WeChat's endpoint would return for this request at ``now``."""
    today = local_today(now, account.tz)
    rng = validate_range(ep, begin_date, end_date, today, span_profile)
    labels = reported_periods(ep, rng, today)
    if not labels:
        return []
    period = ep.label_period
    yesterday = today - timedelta(days=1)
    local_now = now.astimezone(zone(account.tz)).time()
    if local_now < ready_at and any(period_last_day(period, s) == yesterday for s in labels):
        raise ApiError(61503, f"yesterday's data is served after {ready_at:%H:%M}")
    keys: set[Key] = {(period, s) for s in labels}
    with store.read() as conn:
        stale = pending_keys(conn, account, today, keys)
    if stale:
        refresh(store, account, today, keys)
    with store.read() as conn:
        return read_rows(conn, account.id, ep, labels)


def read_rows(conn: Connection, account_id: int, ep: Endpoint, labels: list[date]) -> list[Row]:
    """Finished rows of ``ep`` for the given period labels, in WeChat's order."""
    if ep.kind is RowKind.INTERFACE:
        return read_interface_rows(conn, account_id, ep, labels)
    if ep.kind is RowKind.DIST:
        t = stat_dist
        stmt = (
            select(t.c.ref_date, t.c.count_interval, t.c.msg_user)
            .where(t.c.account_id == account_id, t.c.period == ep.period.value)
            .where(t.c.ref_date.in_(labels))
            .order_by(t.c.ref_date, t.c.count_interval)
        )
        return [
            {"ref_date": r.ref_date.isoformat(), "count_interval": r.count_interval,
             "msg_user": r.msg_user}
            for r in conn.execute(stmt)
        ]  # fmt: skip
    s = stat_summary
    stmt = (
        select(s.c.ref_date, s.c.ref_hour, s.c.msg_type, s.c.msg_user, s.c.msg_count)
        .where(s.c.account_id == account_id, s.c.period == ep.period.value)
        .where(s.c.ref_date.in_(labels))
        .order_by(s.c.ref_date, s.c.ref_hour, s.c.msg_type)
    )
    if ep.period is Period.HOUR:
        return [
            {"ref_date": r.ref_date.isoformat(), "ref_hour": r.ref_hour, "msg_type": r.msg_type,
             "msg_user": r.msg_user, "msg_count": r.msg_count}
            for r in conn.execute(stmt)
        ]  # fmt: skip
    return [
        {"ref_date": r.ref_date.isoformat(), "msg_type": r.msg_type, "msg_user": r.msg_user,
         "msg_count": r.msg_count}
        for r in conn.execute(stmt)
    ]  # fmt: skip
