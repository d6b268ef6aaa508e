"""The finished rows an endpoint serves, read from ClickHouse by key.

A period's rows are those of its latest completed rollup run (schema.py); hour rows
belong to their day's run. Rows that came out zero are never served, as on SQL.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from msgcube.analytics.client import Analytics, in_list, literal
from msgcube.domain.endpoints import Endpoint, Period, RowKind
from msgcube.domain.periods import utc_offsets
from msgcube.storage import clickhouse_dialect as ch

Row = dict[str, Any]


def local_days(an: Analytics, account_id: int, tz: str) -> set[date]:
    """The local days, in zone TZ, that hold the account's messages or events (from
    Python's zone offsets, as every local day: ``clickhouse_dialect.local_seconds``)."""
    days: set[date] = set()
    for table in ("messages", "events"):
        where = f" FROM {an.table(table)} WHERE account_id = {literal(account_id)}"
        lo, hi, n = an.rows(f"SELECT min(create_time), max(create_time), count(){where}")[0]
        if not n:
            continue
        local = ch.local_seconds("create_time", *utc_offsets(tz, int(lo), int(hi) + 1))
        days.update(r[0] for r in an.rows(f"SELECT DISTINCT {ch.local_day(local)}{where}"))
    return days


def read_rows(an: Analytics, account_id: int, ep: Endpoint, labels: list[date]) -> list[Row]:
    """Finished summary or distribution rows of ``ep`` for the labels, in WeChat's order."""
    run_period = Period.DAY if ep.period is Period.HOUR else ep.period
    a, wanted = literal(account_id), in_list(sorted(set(labels)))
    # One round trip: the latest completed run of each label, as a set the server builds
    # once (GLOBAL: on a cluster, from the Distributed table, before the shards read).
    latest = (
        f"SELECT start, max(version) FROM {an.table('rollup_runs')}"
        f" WHERE account_id = {a} AND period = {literal(run_period.value)} AND done = 1"
        f" AND start IN {wanted} GROUP BY start"
    )
    where = (
        f" WHERE account_id = {a} AND period = {literal(ep.period.value)}"
        f" AND ref_date IN {wanted} AND (ref_date, version) GLOBAL IN ({latest})"
    )
    if ep.kind is RowKind.DIST:
        return [
            {"ref_date": d.isoformat(), "count_interval": int(ci), "msg_user": int(u)}
            for d, ci, u in an.rows(
                f"SELECT ref_date, count_interval, msg_user FROM {an.table('stat_dist')}"
                f"{where} AND msg_user > 0 ORDER BY ref_date, count_interval"
            )
        ]
    rows = an.rows(
        "SELECT ref_date, ref_hour, msg_type, msg_user, msg_count"
        f" FROM {an.table('stat_summary')}{where} AND msg_count > 0"
        " ORDER BY ref_date, ref_hour, msg_type"
    )
    if ep.period is Period.HOUR:
        return [
            {
                "ref_date": d.isoformat(),
                "ref_hour": int(h),
                "msg_type": int(t),
                "msg_user": int(u),
                "msg_count": int(c),
            }
            for d, h, t, u, c in rows
        ]
    return [
        {"ref_date": d.isoformat(), "msg_type": int(t), "msg_user": int(u), "msg_count": int(c)}
        for d, _h, t, u, c in rows
    ]
