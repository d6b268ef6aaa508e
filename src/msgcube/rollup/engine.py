"""The one place that reads raw data, computes statistics and writes finished rows.

Per closed day (one pass over that day's messages, through the covering index):
user-day rows, hourly summary rows, and the interface-analysis rows from the relay's
timings (``rollup/interface.py``). From user-day rows: the daily summary and
distribution; per week and month, the same from the user-day rows of their days — never
from raw messages. Every statistic is one portable SQL definition (GROUP BY, COUNT
DISTINCT, CASE) so SQLite and PostgreSQL compute the same thing the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date

from sqlalchemy import (
    Connection,
    Date,
    and_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    select,
    text,
)

from msgcube.analytics import rollup as analytics_rollup
from msgcube.domain.endpoints import Period
from msgcube.domain.messages import COUNTED_TYPES
from msgcube.domain.periods import (
    PeriodKey,
    month_start,
    period_end_timestamp,
    period_last_day,
    periods_touching,
    week_start,
)
from msgcube.rollup.interface import compute_interface_days
from msgcube.rollup.plan import expected_keys, needed_for, pending
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store, analytics_of
from msgcube.storage.rollup_state import mark_done, read_states
from msgcube.storage.schema import messages, stat_dist, stat_summary, user_day

_TYPE_COLUMN = {1: "c1", 2: "c2", 3: "c3", 4: "c4", 6: "c6"}


@dataclass(slots=True)
class RefreshReport:
    """What a refresh computed, for the CLI and the logs."""

    computed: dict[Period, int] = field(
        default_factory=lambda: {Period.DAY: 0, Period.WEEK: 0, Period.MONTH: 0}
    )
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.computed.values())


def pending_keys(
    conn: Connection, account: Account, today: date, within: Iterable[PeriodKey] | None = None
) -> list[PeriodKey]:
    """Closed periods of ``account`` that need computing (optionally only among ``within``).

    Weeks and months read user-day rows, so pending days inside a requested week or month
    are included too.
    """
    states = read_states(conn, account.id)
    expected = expected_keys(account.stats_since, today) if account.follower_base else set()
    if within is not None:
        wanted = set(within)
        wanted |= needed_for(wanted)
        states = {k: v for k, v in states.items() if k in wanted}
        expected &= wanted
    return pending(states, today, expected=expected)


def refresh(
    store: Store,
    account: Account,
    today: date,
    within: Iterable[PeriodKey] | None = None,
    *,
    chunk: int = 31,
    computed_at: int | None = None,
) -> RefreshReport:
    """Compute every pending closed period of ``account`` (or those among ``within``).

    Work is split into transactions of at most ``chunk`` periods so that a long backfill
    does not hold the SQLite write lock for minutes while pushes wait. ``computed_at``
    (the caller's clock, Unix seconds) stamps the periods computed; it is informational.
    """
    started = time.perf_counter()
    report = RefreshReport()
    with store.read() as conn:
        keys = pending_keys(conn, account, today, within)
    for period in (Period.DAY, Period.WEEK, Period.MONTH):
        starts = [s for p, s in keys if p is period]
        for i in range(0, len(starts), chunk):
            part = starts[i : i + chunk]
            with store.write() as conn:
                _compute(conn, account, period, part, computed_at)
            report.computed[period] += len(part)
    report.seconds = time.perf_counter() - started
    return report


def _compute(
    conn: Connection,
    account: Account,
    period: Period,
    starts: Sequence[date],
    computed_at: int | None = None,
) -> None:
    if conn.dialect.name == "postgresql":
        # One rollup per account at a time (the API may compute inline while serve's
        # background loop runs); the transaction-scoped lock ends with the commit.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": 7_400_000 + account.id})
    wanted = [period] if period is Period.DAY else [period, Period.DAY]
    states = read_states(conn, account.id, wanted)
    seqs = {(period, s): states.get((period, s), (0, 0))[0] for s in starts}
    if period is Period.DAY:
        _compute_days(conn, account, starts)
    else:
        # A week or month reads user_day rows: any of its days made dirty since the day
        # rollups ran (a push landing between them) is recomputed first, in this same
        # transaction — otherwise the week would be marked done from stale user_day rows.
        inside = {
            (Period.DAY, d)
            for s in starts
            for d in periods_touching(Period.DAY, s, period_last_day(period, s))
        }
        stale = sorted(
            d for (p, d), (dirty, done) in states.items() if (p, d) in inside and dirty > done
        )
        if stale:
            _compute_days(conn, account, stale)
            seqs.update({(Period.DAY, d): states[(Period.DAY, d)][0] for d in stale})
        _compute_periods(conn, account, period, starts)
    mark_done(conn, account.id, seqs, computed_at)


def _compute_days(conn: Connection, account: Account, days: Sequence[date]) -> None:
    a = account.id
    analytics = analytics_of(conn)
    if analytics is not None:
        analytics_rollup.compute_days(analytics, a, account.tz, account.follower_base, days)
        compute_interface_days(conn, a, days)
        return
    conn.execute(delete(user_day).where(user_day.c.account_id == a, user_day.c.day.in_(days)))
    conn.execute(
        delete(stat_summary).where(
            stat_summary.c.account_id == a,
            stat_summary.c.period.in_([Period.DAY.value, Period.HOUR.value]),
            stat_summary.c.ref_date.in_(days),
        )
    )
    conn.execute(
        delete(stat_dist).where(
            stat_dist.c.account_id == a,
            stat_dist.c.period == Period.DAY.value,
            stat_dist.c.ref_date.in_(days),
        )
    )
    counted = and_(messages.c.account_id == a, messages.c.msg_type.is_not(None))
    for d in days:
        # One statement per day keeps week/month as bound constants (portable SQL) and
        # reads the day's messages in (day, user_id) index order: no sort needed.
        per_type = [func.sum(case((messages.c.msg_type == t, 1), else_=0)) for t in COUNTED_TYPES]
        src = (
            select(
                literal(a),
                literal(d),
                messages.c.user_id,
                literal(week_start(d)),
                literal(month_start(d)),
                *per_type,
                func.count(),
            )
            .where(counted, messages.c.day == d)
            .group_by(messages.c.user_id)
        )
        conn.execute(
            insert(user_day).from_select(
                [
                    "account_id",
                    "day",
                    "user_id",
                    "week",
                    "month",
                    "c1",
                    "c2",
                    "c3",
                    "c4",
                    "c6",
                    "total",
                ],
                src,
            )
        )
    hourly = conn.execute(
        select(
            messages.c.day,
            messages.c.hour,
            messages.c.msg_type,
            func.count(messages.c.user_id.distinct()),
            func.count(),
        )
        .where(counted, messages.c.day.in_(days))
        .group_by(messages.c.day, messages.c.hour, messages.c.msg_type)
    ).all()
    hour_rows = [
        {
            "account_id": a,
            "period": Period.HOUR.value,
            "ref_date": day,
            "ref_hour": hour * 100,
            "msg_type": msg_type,
            "msg_user": users,
            "msg_count": count,
        }
        for day, hour, msg_type, users, count in hourly
    ]
    if hour_rows:
        conn.execute(insert(stat_summary), hour_rows)
    _write_aggregates(conn, account, Period.DAY, days)
    compute_interface_days(conn, a, days)


def _compute_periods(
    conn: Connection, account: Account, period: Period, starts: Sequence[date]
) -> None:
    a = account.id
    analytics = analytics_of(conn)
    if analytics is not None:
        analytics_rollup.compute_periods(
            analytics, a, account.tz, account.follower_base, period, starts
        )
        return
    conn.execute(
        delete(stat_summary).where(
            stat_summary.c.account_id == a,
            stat_summary.c.period == period.value,
            stat_summary.c.ref_date.in_(starts),
        )
    )
    conn.execute(
        delete(stat_dist).where(
            stat_dist.c.account_id == a,
            stat_dist.c.period == period.value,
            stat_dist.c.ref_date.in_(starts),
        )
    )
    _write_aggregates(conn, account, period, starts)


def _write_aggregates(
    conn: Connection, account: Account, period: Period, starts: Sequence[date]
) -> None:
    """Summary and distribution rows of each period, from its user-day rows."""
    if not starts:
        return
    a = account.id
    label = {
        Period.DAY: user_day.c.day,
        Period.WEEK: user_day.c.week,
        Period.MONTH: user_day.c.month,
    }[period]
    first, last = min(starts), max(period_last_day(period, s) for s in starts)
    type_cols = [user_day.c[_TYPE_COLUMN[t]] for t in COUNTED_TYPES]
    where = (user_day.c.account_id == a, user_day.c.day.between(first, last), label.in_(starts))
    if period is Period.DAY:
        # user_day already holds one row per (day, sender): no regrouping needed.
        per_user = select(label.label("p"), *type_cols, user_day.c.total).where(*where).subquery()
    else:
        per_user = (
            select(
                label.label("p"),
                *[func.sum(c).label(c.name) for c in type_cols],
                func.sum(user_day.c.total).label("total"),
            )
            .where(*where)
            .group_by(label, user_day.c.user_id)
            .subquery()
        )
    total = per_user.c.total
    aggregates = []
    for t in COUNTED_TYPES:
        col = per_user.c[_TYPE_COLUMN[t]]
        aggregates += [func.sum(case((col > 0, 1), else_=0)), func.sum(col)]
    aggregates += [
        func.sum(case((total.between(1, 5), 1), else_=0)),
        func.sum(case((total.between(6, 10), 1), else_=0)),
        func.sum(case((total > 10, 1), else_=0)),
    ]
    summary_rows: list[dict[str, object]] = []
    dist_rows: list[dict[str, object]] = []
    for row in conn.execute(select(per_user.c.p, *aggregates).group_by(per_user.c.p)):
        ref = row[0]
        values = [int(v or 0) for v in row[1:]]
        for i, t in enumerate(COUNTED_TYPES):
            users, count = values[2 * i], values[2 * i + 1]
            if count:
                summary_rows.append(
                    {
                        "account_id": a,
                        "period": period.value,
                        "ref_date": ref,
                        "ref_hour": 0,
                        "msg_type": t,
                        "msg_user": users,
                        "msg_count": count,
                    }
                )
        for interval, users in zip((1, 2, 3), values[-3:], strict=True):
            if users:
                dist_rows.append(
                    {
                        "account_id": a,
                        "period": period.value,
                        "ref_date": ref,
                        "count_interval": interval,
                        "msg_user": users,
                    }
                )
    if account.follower_base:
        for s in starts:
            silent = _silent_followers(conn, account, period, s)
            if silent:
                dist_rows.append(
                    {
                        "account_id": a,
                        "period": period.value,
                        "ref_date": s,
                        "count_interval": 0,
                        "msg_user": silent,
                    }
                )
    if summary_rows:
        conn.execute(insert(stat_summary), summary_rows)
    if dist_rows:
        conn.execute(insert(stat_dist), dist_rows)


# Followers at the end of the period: the imported list, minus users whose latest
# follow event says otherwise, plus users whose latest follow event is a subscribe. At
# equal CreateTime "unsubscribe" sorts last and wins (the conservative reading).
_SILENT_FOLLOWERS = text(
    """
    SELECT COUNT(*) FROM (
      SELECT f.openid FROM followers f
      WHERE f.account_id = :a
        AND NOT EXISTS (
          SELECT 1 FROM events e
          WHERE e.account_id = :a AND e.openid = f.openid
            AND e.event IN ('subscribe', 'unsubscribe') AND e.create_time < :t)
      UNION
      SELECT x.openid FROM (
        SELECT openid, event,
               ROW_NUMBER() OVER (PARTITION BY openid ORDER BY create_time DESC, event DESC) AS rn
        FROM events
        WHERE account_id = :a AND event IN ('subscribe', 'unsubscribe') AND create_time < :t
      ) x
      WHERE x.rn = 1 AND x.event = 'subscribe'
    ) fol
    WHERE fol.openid NOT IN (
      SELECT s.openid FROM user_day ud JOIN senders s ON s.id = ud.user_id
      WHERE ud.account_id = :a AND ud.day BETWEEN :lo AND :hi)
    """
).bindparams(bindparam("lo", type_=Date), bindparam("hi", type_=Date))


def _silent_followers(conn: Connection, account: Account, period: Period, start: date) -> int:
    """count_interval 0: followers at the end of the period who sent nothing in it."""
    params = {
        "a": account.id,
        "t": period_end_timestamp(period, start, account.tz),
        "lo": start,
        "hi": period_last_day(period, start),
    }
    return int(conn.execute(_SILENT_FOLLOWERS, params).scalar_one())
