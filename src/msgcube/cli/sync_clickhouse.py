"""``msgcube sync --db chdb://DIR`` or ``--db clickhouse://…``: the mirror in ClickHouse.

The same tables as on SQL (``wechat_<dataset>`` keyed by appid and the natural key, and
``wechat_sync_state``), as ``ReplacingMergeTree`` tables with a ``version``: a changed row
is a newer version of its key, a row WeChat no longer reports a newer version with
``deleted = 1``. Read them with ``FINAL`` and ``WHERE deleted = 0``::

    SELECT ref_date, msg_type, msg_user, msg_count
    FROM msgcube.wechat_getupstreammsg FINAL
    WHERE appid = 'wx…' AND deleted = 0 ORDER BY ref_date, msg_type

Each window writes its rows, then the sync state: a run killed in between fetches that
window again (writing it twice changes nothing).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from msgcube.analytics.client import Analytics, literal
from msgcube.client.call_plan import key_fields, measure_fields
from msgcube.client.schema import STATE_TABLE, table_name
from msgcube.client.sync import WindowRows, window_rows
from msgcube.domain.endpoints import ENDPOINTS
from msgcube.storage import clickhouse_dialect as ch


class ClickHouseMirror:
    """A ``client.sync.Mirror`` in ClickHouse (embedded chdb or a server/cluster)."""

    def __init__(self, analytics: Analytics) -> None:
        self.an = analytics

    def prepare(self) -> None:
        target = self.an.target
        statements = [ch.create_database(target)]
        for ep in ENDPOINTS:
            keys = key_fields(ep)
            columns = [("appid", ch.STRING)]
            columns += [(k, "Date" if k == "ref_date" else "Int64") for k in keys]
            columns += [(m, "Int64") for m in measure_fields(ep)]
            columns += [("updated_at", ch.DATETIME), ("version", "UInt64"), ("deleted", "UInt8")]
            statements += ch.create_table(
                target,
                table_name(ep),
                columns,
                ["appid", *keys],
                engine="ReplacingMergeTree",
                version="version",
                shard_key="appid",
            )
        statements += ch.create_table(
            target,
            STATE_TABLE,
            [
                ("appid", ch.STRING),
                ("dataset", ch.STRING),
                ("first_day", "Date"),
                ("last_complete_day", "Date"),
                ("updated_at", ch.DATETIME),
                ("version", "UInt64"),
            ],
            ["appid", "dataset"],
            engine="ReplacingMergeTree",
            version="version",
            shard_key="appid",
        )
        for statement in statements:
            self.an.ddl(statement)

    def states(self, appid: str) -> dict[str, tuple[date, date]]:
        rows = self.an.rows(
            "SELECT dataset, argMax(first_day, version), argMax(last_complete_day, version)"
            f" FROM {self.an.table(STATE_TABLE)} WHERE appid = {literal(appid)} GROUP BY dataset"
        )
        return {str(name): (first, last) for name, first, last in rows}

    def write(self, batch: WindowRows) -> tuple[int, int, int]:
        ep, appid, window, now = batch.ep, batch.appid, batch.window, batch.now
        keys, measures = key_fields(ep), measure_fields(ep)
        table = table_name(ep)
        listed = ", ".join(ch.quote_ident(c) for c in (*keys, *measures))
        stored = {
            tuple(r[: len(keys)]): tuple(int(v) for v in r[len(keys) :])
            for r in self.an.rows(
                f"SELECT {listed} FROM {self.an.table(table)} FINAL"
                f" WHERE appid = {literal(appid)} AND deleted = 0"
                f" AND ref_date >= {literal(window.begin)} AND ref_date <= {literal(window.end)}"
            )
        }
        fetched = window_rows(ep, window, batch.rows)
        version, stamp = int(now.timestamp() * 1_000_000), int(now.timestamp())
        out: list[tuple[Any, ...]] = [
            (appid, *k, *v, stamp, version, 0) for k, v in fetched.items() if stored.get(k) != v
        ]
        gone = [k for k in stored if k not in fetched]
        out += [(appid, *k, *(0 for _ in measures), stamp, version, 1) for k in gone]
        columns = ("appid", *keys, *measures, "updated_at", "version", "deleted")
        self.an.insert(table, columns, out)
        self.an.insert(
            STATE_TABLE,
            ("appid", "dataset", "first_day", "last_complete_day", "updated_at", "version"),
            [(appid, ep.name, *batch.state, stamp, version)],
        )
        inserted = sum(1 for k in fetched if k not in stored)
        return inserted, len(out) - len(gone) - inserted, len(gone)
