"""``serve_rows``: the library's typed entry point (dates in, rows out) behind the API's
``served_list``, ``msgcube stats`` and the dashboard, on both backends."""

from __future__ import annotations

from datetime import date, time

import pytest

from msgcube.domain.endpoints import BY_NAME
from msgcube.domain.periods import local_today
from msgcube.errors import ApiError
from msgcube.ingest.synthetic import generate_into
from msgcube.rollup.query import serve_rows, served_list
from msgcube.storage.db import Store
from support.api import new_account, shanghai

from conftest import fresh_appid

EARLY = shanghai(2026, 6, 1, 7)  # before ready_at 08:00
YESTERDAY = date(2026, 5, 31)
EIGHT = time(8, 0)


@pytest.mark.parametrize("name", ["getupstreammsg", "getupstreammsgweek", "getupstreammsghour"])
def test_serve_rows_is_served_list_with_dates(store: Store, name: str) -> None:
    account = new_account(store, fresh_appid("wxserve"), "serve-secret-0123456789abcdef")
    generate_into(store, account, days=10, users=8, seed=2, end=YESTERDAY, today=local_today(EARLY))
    ep = BY_NAME[name]
    begin = YESTERDAY if name == "getupstreammsghour" else date(2026, 5, 25)
    served = serve_rows(store, account, ep, begin, YESTERDAY, shanghai(2026, 6, 1, 10))
    assert served.rows == served_list(
        store, account, ep, begin.isoformat(), "2026-05-31", shanghai(2026, 6, 1, 10)
    )
    assert served.rows and not served.not_ready
    assert served.labels[-1] <= YESTERDAY

    # Before ready_at: the API's 61503, or (the dashboard) that period left out.
    with pytest.raises(ApiError) as refused:
        serve_rows(store, account, ep, begin, YESTERDAY, EARLY, ready_at=EIGHT)
    assert refused.value.errcode == 61503
    partial = serve_rows(
        store, account, ep, begin, YESTERDAY, EARLY, ready_at=EIGHT, leave_out_not_ready=True
    )
    assert partial.not_ready
    assert partial.labels == served.labels[:-1]
    last = served.labels[-1].isoformat()
    assert partial.rows == [r for r in served.rows if r["ref_date"] != last]
