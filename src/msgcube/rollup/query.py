"""The ``list`` an endpoint serves: validation, freshness, then an index read.

``serve_rows`` (dates in, rows out) is the library's entry point behind the API,
``msgcube stats`` and the dashboard, so the three can never disagree. It validates the
range (61501), refuses yesterday before ``ready_at`` (61503; or, for the dashboard,
leaves that period out and says so), computes any requested period that is still
pending (late data, a day that has just ended) and reads the finished rows.
``served_list`` is the same for the API's ``YYYY-MM-DD`` strings (61500 first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, select

from msgcube.analytics.reads import read_rows as read_analytics_rows
from msgcube.domain.endpoints import Endpoint, Period, RowKind
from msgcube.domain.periods import (
    PeriodKey,
    check_range,
    local_today,
    parse_date,
    period_last_day,
    reported_periods,
    zone,
)
from msgcube.errors import ApiError
from msgcube.rollup.engine import pending_keys, refresh
from msgcube.rollup.interface import read_interface_rows
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store, analytics_of
from msgcube.storage.schema import stat_dist, stat_summary

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Served:
    """The rows of one request, and the periods they cover."""

    rows: list[Row]
    labels: list[date]
    """Every period reported (rows or not): charts show a period without rows as zero."""
    not_ready: bool = False
    """A period ending yesterday was left out: ``ready_at`` has not passed yet."""


def serve_rows(
    store: Store,
    account: Account,
    ep: Endpoint,
    begin: date,
    end: date,
    now: datetime,
    *,
    span_profile: str = "classic",
    ready_at: time = time(0, 0),
    leave_out_not_ready: bool = False,
) -> Served:
    """The rows WeChat's endpoint would return for ``[begin, end]`` at ``now``.

    Before ``ready_at`` a range reaching yesterday's period answers 61503, as the API
    does; with ``leave_out_not_ready`` (the dashboard) that period is left out instead.
    """
    today = local_today(now, account.tz)
    labels = reported_periods(ep, check_range(ep, begin, end, today, span_profile), today)
    if not labels:
        return Served([], [])
    period = ep.label_period
    yesterday = today - timedelta(days=1)
    local_now = now.astimezone(zone(account.tz)).time()
    not_ready = local_now < ready_at and period_last_day(period, labels[-1]) == yesterday
    if not_ready:
        # Only the last period of a range can end yesterday (the range ends by then).
        if not leave_out_not_ready:
            raise ApiError(61503, f"yesterday's data is served after {ready_at:%H:%M}")
        labels = labels[:-1]
    keys: set[PeriodKey] = {(period, s) for s in labels}
    if keys:
        with store.read() as conn:
            stale = pending_keys(conn, account, today, keys)
        if stale:
            refresh(store, account, today, keys, computed_at=int(now.timestamp()))
    with store.read() as conn:
        rows = read_rows(conn, account.id, ep, labels) if labels else []
    return Served(rows, labels, not_ready)


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
    """Exactly the ``list`` WeChat's endpoint would return for this request at ``now``:
    ``serve_rows`` for the request's two ``YYYY-MM-DD`` strings (61500 when malformed)."""
    begin, end = parse_date(begin_date), parse_date(end_date)
    served = serve_rows(
        store, account, ep, begin, end, now, span_profile=span_profile, ready_at=ready_at
    )
    return served.rows


def read_rows(conn: Connection, account_id: int, ep: Endpoint, labels: list[date]) -> list[Row]:
    """Finished rows of ``ep`` for the given period labels, in WeChat's order."""
    if ep.kind is RowKind.INTERFACE:
        return read_interface_rows(conn, account_id, ep, labels)
    analytics = analytics_of(conn)
    if analytics is not None:
        return read_analytics_rows(analytics, account_id, ep, labels)
    if ep.kind is RowKind.DIST:
        t = stat_dist
        stmt = (
            select(t.c.ref_date, t.c.count_interval, t.c.msg_user)
            .where(t.c.account_id == account_id, t.c.period == ep.period.value)
            .where(t.c.ref_date.in_(labels))
            .order_by(t.c.ref_date, t.c.count_interval)
        )
        return [
            {
                "ref_date": r.ref_date.isoformat(),
                "count_interval": r.count_interval,
                "msg_user": r.msg_user,
            }
            for r in conn.execute(stmt)
        ]
    s = stat_summary
    stmt = (
        select(s.c.ref_date, s.c.ref_hour, s.c.msg_type, s.c.msg_user, s.c.msg_count)
        .where(s.c.account_id == account_id, s.c.period == ep.period.value)
        .where(s.c.ref_date.in_(labels))
        .order_by(s.c.ref_date, s.c.ref_hour, s.c.msg_type)
    )
    if ep.period is Period.HOUR:
        return [
            {
                "ref_date": r.ref_date.isoformat(),
                "ref_hour": r.ref_hour,
                "msg_type": r.msg_type,
                "msg_user": r.msg_user,
                "msg_count": r.msg_count,
            }
            for r in conn.execute(stmt)
        ]
    return [
        {
            "ref_date": r.ref_date.isoformat(),
            "msg_type": r.msg_type,
            "msg_user": r.msg_user,
            "msg_count": r.msg_count,
        }
        for r in conn.execute(stmt)
    ]
