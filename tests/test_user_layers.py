"""user_day and user_period, kept at ingest, equal a brute-force count of the stored messages.

The rollup reads only these per-sender rows (and messages for hours), so they must count
every stored message exactly once — across batches, duplicates inside and across batches,
late data for old days, uncounted types, unsigned MsgIds above 2**63 and the bulk path of
each backend (SQLite's grouped inserts, PostgreSQL's RETURNING).
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from msgcube.domain.messages import MSG_TYPE_CODES, Message
from msgcube.domain.periods import local_day_hour, month_start, week_start
from msgcube.ingest.batch import write_batch
from msgcube.storage.accounts import add_account
from msgcube.storage.db import Store
from msgcube.storage.schema import senders, user_day, user_period

from conftest import STAMP, fresh_appid

TODAY = date(2026, 4, 1)
BASE = int(datetime(2026, 2, 20, tzinfo=UTC).timestamp())
TYPES = ["text", "image", "voice", "video", "shortvideo", "link", "location"]
COLUMNS = {1: 0, 2: 1, 3: 2, 4: 3, 6: 4}

messages_st = st.builds(
    Message,
    msg_id=st.one_of(st.integers(1, 40), st.integers(2**64 - 5, 2**64 - 1)),
    openid=st.sampled_from(["oA", "oB", "oC"]),
    create_time=st.integers(BASE, BASE + 40 * 86400),
    msg_type_name=st.sampled_from(TYPES),
)


def _expected(batches: list[list[Message]], tz: str) -> tuple[Counter[tuple[object, ...]], ...]:
    stored: dict[int, Message] = {}
    for batch in batches:
        for m in batch:
            stored.setdefault(m.msg_id, m)  # the first stored copy of a MsgId is the one kept
    days: Counter[tuple[object, ...]] = Counter()
    periods: Counter[tuple[object, ...]] = Counter()
    for m in stored.values():
        code = MSG_TYPE_CODES.get(m.msg_type_name)
        if code is None:
            continue
        day, _ = local_day_hour(m.create_time, tz)
        for key in (
            (day, m.openid),
            ("week", week_start(day), m.openid),
            ("month", month_start(day), m.openid),
        ):
            target = days if len(key) == 2 else periods
            target[(*key, COLUMNS[code])] += 1
            target[(*key, "total")] += 1
    return days, periods


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(st.lists(messages_st, max_size=30), min_size=1, max_size=4))
def test_user_layers_count_every_stored_message_once(
    store: Store, batches: list[list[Message]]
) -> None:
    with store.write() as conn:
        account = add_account(
            conn, appid=fresh_appid("wxlayer"), secret="s", tz="Asia/Shanghai", now=STAMP
        )
    for batch in batches:
        with store.write() as conn:
            write_batch(conn, account, batch, TODAY, received_at=STAMP)
    with store.read() as conn:
        ids = {
            sid: o
            for o, sid in conn.execute(
                select(senders.c.openid, senders.c.id).where(senders.c.account_id == account.id)
            ).all()
        }
        got_days: Counter[tuple[object, ...]] = Counter()
        for r in conn.execute(select(user_day).where(user_day.c.account_id == account.id)):
            assert (r.week, r.month) == (week_start(r.day), month_start(r.day))
            for i, c in enumerate(("c1", "c2", "c3", "c4", "c6")):
                if r._mapping[c]:
                    got_days[(r.day, ids[r.user_id], i)] = r._mapping[c]
            got_days[(r.day, ids[r.user_id], "total")] = r.total
        got_periods: Counter[tuple[object, ...]] = Counter()
        for r in conn.execute(select(user_period).where(user_period.c.account_id == account.id)):
            for i, c in enumerate(("c1", "c2", "c3", "c4", "c6")):
                if r._mapping[c]:
                    got_periods[(r.period, r.start, ids[r.user_id], i)] = r._mapping[c]
            got_periods[(r.period, r.start, ids[r.user_id], "total")] = r.total
    want_days, want_periods = _expected(batches, "Asia/Shanghai")
    assert got_days == want_days
    assert got_periods == want_periods
