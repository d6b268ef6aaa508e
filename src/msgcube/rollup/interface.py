"""Interface analysis (接口分析): the relay's timings, summed per local hour and day.

WeChat's getinterfacesummary[hour] describes the developer's server as WeChat saw it:
how many pushes it answered (callback_count), how many failed (fail_count: no valid
answer in time, a transport error, a non-2xx status), and the time they took
(total_time_cost, max_time_cost, in milliseconds). The relay records exactly that per
forwarded push in ``relay_calls``; this module turns those rows into finished rows.

A day's interface rows are part of the day rollup: ``record_relay_calls`` marks the day
dirty, and the engine recomputes them with the day's message statistics, from scratch
(delete, then insert what the GROUP BY returns), so the numbers are exact whatever
arrived late. Only hours and days with at least one call get a row — like the message
endpoints, which omit zero rows, and like WeChat, which returns an empty list for an
account whose server received nothing; an account without an upstream therefore gets
``[]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection, case, delete, func, insert, select

from msgcube.domain.endpoints import Endpoint, Period
from msgcube.storage.schema import relay_calls, stat_interface

Row = dict[str, Any]


def compute_interface_days(conn: Connection, account_id: int, days: Sequence[date]) -> None:
    """Rewrite the hour and day rows of ``days`` from the recorded calls (one GROUP BY)."""
    if not days:
        return
    t = stat_interface
    conn.execute(delete(t).where(t.c.account_id == account_id, t.c.ref_date.in_(days)))
    r = relay_calls
    hourly = conn.execute(
        select(
            r.c.day,
            r.c.hour,
            func.count(),
            func.sum(case((r.c.failed, 1), else_=0)),
            func.sum(r.c.cost_ms),
            func.max(r.c.cost_ms),
        )
        .where(r.c.account_id == account_id, r.c.day.in_(days))
        .group_by(r.c.day, r.c.hour)
    ).all()
    rows: list[Row] = []
    per_day: dict[date, list[int]] = {}
    for day, hour, calls, failed, total, longest in hourly:
        values = [int(calls), int(failed or 0), int(total or 0), int(longest or 0)]
        rows.append(_row(account_id, Period.HOUR, day, hour * 100, values))
        acc = per_day.setdefault(day, [0, 0, 0, 0])
        acc[0] += values[0]
        acc[1] += values[1]
        acc[2] += values[2]
        acc[3] = max(acc[3], values[3])
    rows += [_row(account_id, Period.DAY, day, 0, v) for day, v in per_day.items()]
    if rows:
        conn.execute(insert(t), rows)


def _row(account_id: int, period: Period, day: date, ref_hour: int, values: list[int]) -> Row:
    calls, failed, total, longest = values
    return {
        "account_id": account_id,
        "period": period.value,
        "ref_date": day,
        "ref_hour": ref_hour,
        "callback_count": calls,
        "fail_count": failed,
        "total_time_cost": total,
        "max_time_cost": longest,
    }


def read_interface_rows(
    conn: Connection, account_id: int, ep: Endpoint, labels: list[date]
) -> list[Row]:
    """Finished rows of an interface endpoint for the given days, in WeChat's order."""
    t = stat_interface
    stmt = (
        select(*(t.c[f] for f in ep.fields))
        .where(t.c.account_id == account_id, t.c.period == ep.period.value)
        .where(t.c.ref_date.in_(labels))
        .order_by(t.c.ref_date, t.c.ref_hour)
    )
    return [dict(zip(ep.fields, map(_json_value, r), strict=True)) for r in conn.execute(stmt)]


def _json_value(value: object) -> object:
    return value.isoformat() if isinstance(value, date) else value
