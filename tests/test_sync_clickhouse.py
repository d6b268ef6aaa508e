"""``msgcube sync`` into ClickHouse (chdb): the same mirror as on SQL, recounts included.

Against the fake WeChat of ``test_client_fake_wechat``, on the session's chdb directory
(database ``sync_mirror`` of its own).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from msgcube.analytics.client import Analytics, literal
from msgcube.analytics.url import parse_analytics_url
from msgcube.cli.sync_clickhouse import ClickHouseMirror
from msgcube.client.call_plan import key_fields
from msgcube.client.schema import table_name
from msgcube.client.sync import sync
from msgcube.domain.endpoints import ENDPOINTS, Endpoint
from msgcube.storage import clickhouse_dialect as ch
from test_sync import aligned, setup

from conftest import fresh_appid


@pytest.fixture
def mirror(chdb_dir: Path) -> Iterator[ClickHouseMirror]:
    embedded = parse_analytics_url(f"chdb://{chdb_dir}?database=sync_mirror")
    assert embedded is not None and embedded.database == "sync_mirror"
    analytics = Analytics(embedded)
    yield ClickHouseMirror(analytics)
    analytics.close()


def stored(an: Analytics, ep: Endpoint, appid: str) -> list[dict[str, Any]]:
    columns = ", ".join(ch.quote_ident(f) for f in ep.fields)
    keys = ", ".join(key_fields(ep))
    rows = an.rows(
        f"SELECT {columns} FROM {an.table(table_name(ep))} FINAL"
        f" WHERE appid = {literal(appid)} AND deleted = 0 ORDER BY {keys}"
    )
    return [
        {
            f: (v.isoformat() if f == "ref_date" else int(v))
            for f, v in zip(ep.fields, r, strict=True)
        }
        for r in rows
    ]


def test_sync_into_clickhouse_mirrors_recounts_and_resumes(mirror: ClickHouseMirror) -> None:
    appid = fresh_appid("wxchsync")
    fake, client = setup(appid)
    since, until = date(2025, 11, 1), date(2025, 12, 31)
    with client:
        first = sync(client, mirror, appid, since=since, until=until)
        assert first.complete and first.rows_written > 0
        for ep in ENDPOINTS:
            want = fake.expected(ep, aligned(ep, since), until)
            assert stored(mirror.an, ep, appid) == want, ep.name
        again = sync(client, mirror, appid, since=since, until=until)
        assert (again.calls, again.rows_written) == (0, 0)
        fake.version += 1  # WeChat recomputed everything (late pushes)
        report = sync(client, mirror, appid, since=since, until=until, refresh_days=80)
    assert sum(d.rows_updated for d in report.datasets.values()) > 0
    assert sum(d.rows_deleted for d in report.datasets.values()) > 0
    for ep in ENDPOINTS:
        assert stored(mirror.an, ep, appid) == fake.expected(ep, aligned(ep, since), until)
    assert mirror.states(appid)["getupstreammsg"] == (since, until)
