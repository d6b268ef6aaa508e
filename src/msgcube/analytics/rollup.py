"""The rollup inside ClickHouse: one ``INSERT … SELECT`` per layer and run, no rows through Python.

The same layers as on SQL (rollup/engine.py), the same definitions:

- per closed day, from its messages (one row per stored message, ``FINAL``): user-day
  rows and the hourly summary; from those user-day rows the daily summary and distribution;
- per week and month, summary and distribution from the user-day rows of its days;
- count_interval 0 (silent followers) from the follower list, the follow events and the
  senders of the period, when a follower list was imported.

Each run takes a new ``version`` (one more than any the account's runs ever claimed),
claims it in ``rollup_runs``, writes its rows with it, then marks it done; readers use
the rows of a period's latest done run (schema.py says why). Runs of one account never
overlap: the caller holds the account's rollup lock in ``db`` (rollup/engine.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from msgcube.analytics.client import Analytics, in_list, literal, tuple_set
from msgcube.analytics.schema import USER_DAY
from msgcube.analytics.writes import current_followers_version
from msgcube.domain.endpoints import Period
from msgcube.domain.periods import period_end_timestamp, period_last_day, utc_offsets
from msgcube.storage import clickhouse_dialect as ch

_TYPES = (1, 2, 3, 4, 6)  # the counted msg_types, each a column c<t> / s<t>
_SUMMARY_COLUMNS = "account_id, period, ref_date, ref_hour, msg_type, msg_user, msg_count, version"
_DIST_COLUMNS = "account_id, period, ref_date, count_interval, msg_user, version"
_ROW_COLUMNS = "user_key, c1, c2, c3, c4, c6, total"  # of a user-day row, after its label p


def _claim(an: Analytics, account_id: int, period: Period, starts: Sequence[date]) -> int:
    last = an.scalar(
        f"SELECT max(version) FROM {an.table('rollup_runs')}"
        f" WHERE account_id = {literal(account_id)}"
    )
    version = int(last or 0) + 1
    _runs(an, account_id, period, starts, version, done=0)
    return version


def _runs(
    an: Analytics, account_id: int, period: Period, starts: Sequence[date], version: int, done: int
) -> None:
    an.insert(
        "rollup_runs",
        ("account_id", "period", "start", "version", "done"),
        [(account_id, period.value, s, version, done) for s in starts],
    )


def latest_runs(
    an: Analytics, account_id: int, period: Period, first: date, last: date
) -> dict[date, int]:
    """start → the version of its latest completed run, for starts in ``[first, last]``."""
    rows = an.rows(
        f"SELECT start, max(version) FROM {an.table('rollup_runs')}"
        f" WHERE account_id = {literal(account_id)} AND period = {literal(period.value)}"
        f" AND done = 1 AND start >= {literal(first)} AND start <= {literal(last)}"
        " GROUP BY start"
    )
    return {r[0]: int(r[1]) for r in rows}


def _deduplicated_messages(an: Analytics, a: int, tz: str, days: Sequence[date]) -> str:
    """The days' messages with their local day and hour in TZ and their sender key, one
    row per stored message. Local times come from Python's zone offsets, as on SQL
    (``clickhouse_dialect.local_seconds`` says why).

    ``FINAL`` collapses the copies that two concurrent writers both inserted (each found
    the MsgId new): copies of one push share the whole sorting key (account, CreateTime,
    MsgId), and ``FINAL`` merges equal keys across all parts at read time, whether or
    not the engine merged them yet. The filter names sorting-key columns only, so it
    cannot separate copies before they collapse. A later copy with another CreateTime
    is never inserted (``message_ids``: first stored wins). Only two writers racing with
    *different* messages under one MsgId (not a retry: WeChat resends the same one) could
    store two keys; the ``GROUP BY msg_id`` this replaces (twice the cost on 2M messages)
    collapsed those only when both fell in one run's window either.
    """
    lo = period_end_timestamp(Period.DAY, min(days) - timedelta(days=1), tz)
    hi = period_end_timestamp(Period.DAY, max(days), tz)
    local = ch.local_seconds("create_time", *utc_offsets(tz, lo, hi))
    return (
        f"SELECT {ch.local_day('lt')} AS day, {ch.local_hour('lt')} AS hr, uk, mt FROM ("
        f" SELECT {local} AS lt, user_key AS uk, msg_type AS mt"
        f" FROM {an.table('messages')} FINAL WHERE account_id = {literal(a)}"
        f" AND create_time >= {lo} AND create_time < {hi})"
        f" WHERE day IN {in_list(days)}"
    )


def compute_days(
    an: Analytics, account_id: int, tz: str, follower_base: bool, days: Sequence[date]
) -> None:
    """user_day, the hourly and daily summary and the daily distribution of DAYS."""
    if not days:
        return
    a = account_id
    v = _claim(an, a, Period.DAY, days)
    messages = _deduplicated_messages(an, a, tz, days)
    an.command(
        f"INSERT INTO {an.table(USER_DAY)}"
        " (account_id, day, user_key, version, week, month, c1, c2, c3, c4, c6, total)"
        f" SELECT {literal(a)}, day, uk, {v}, toMonday(day), toStartOfMonth(day),"
        " countIf(mt = 1), countIf(mt = 2), countIf(mt = 3), countIf(mt = 4), countIf(mt = 6),"
        f" count() FROM ({messages}) WHERE mt != 0 GROUP BY day, uk"
    )
    # uniqExact over the 16-byte keys: 0.12 s against 0.15 s for counting (day, hour,
    # type, user) groups, which had been the faster form over openid strings (A/B, 2M).
    an.command(
        f"INSERT INTO {an.table('stat_summary')} ({_SUMMARY_COLUMNS})"
        f" SELECT {literal(a)}, 'hour', day, toUInt16(hr) * 100, mt, uniqExact(uk), count(), {v}"
        f" FROM ({messages}) WHERE mt != 0 GROUP BY day, hr, mt"
    )
    rows = (
        f"SELECT day AS p, {_ROW_COLUMNS} FROM {an.table(USER_DAY)}"
        f" WHERE account_id = {literal(a)} AND day IN {in_list(days)} AND version = {v}"
    )
    _aggregates(an, a, tz, follower_base, Period.DAY, days, rows, {d: v for d in days}, v)
    _runs(an, a, Period.DAY, days, v, done=1)


def compute_periods(
    an: Analytics,
    account_id: int,
    tz: str,
    follower_base: bool,
    period: Period,
    starts: Sequence[date],
) -> None:
    """Summary and distribution of each week or month in STARTS, from its days' user-day rows."""
    if not starts:
        return
    a = account_id
    v = _claim(an, a, period, starts)
    first, last = min(starts), max(period_last_day(period, s) for s in starts)
    day_runs = latest_runs(an, a, Period.DAY, first, last)
    label = "week" if period is Period.WEEK else "month"
    rows = ""
    if day_runs:
        rows = (
            f"SELECT {label} AS p, {_ROW_COLUMNS} FROM {an.table(USER_DAY)}"
            f" WHERE account_id = {literal(a)} AND day >= {literal(first)}"
            f" AND day <= {literal(last)} AND {label} IN {in_list(starts)}"
            f" AND (day, version) IN {tuple_set(sorted(day_runs.items()))}"
        )
    _aggregates(an, a, tz, follower_base, period, starts, rows, day_runs, v)
    _runs(an, a, period, starts, v, done=1)


def _aggregates(
    an: Analytics,
    a: int,
    tz: str,
    follower_base: bool,
    period: Period,
    starts: Sequence[date],
    rows: str,
    day_runs: dict[date, int],
    v: int,
) -> None:
    """Summary rows per msg_type and distribution rows per count_interval, of the
    user-day ROWS of the periods (labelled ``p``)."""
    p = literal(period.value)
    if rows:
        # A day has one row per user; a week or month has one per user and day.
        one_per_user = period is Period.DAY
        # The summary straight from the rows, users counted per type by uniqExactIf over
        # the keys: CPU 0.14-0.16 s against 0.18-0.19 s for summing per user first
        # (week, month; 2M messages). Aggregated per period first, then one row per type
        # of the few results (an arrayJoin over the rows would multiply them by five).
        per_type = ", ".join(
            (f"countIf(c{t} > 0)" if one_per_user else f"uniqExactIf(user_key, c{t} > 0)")
            + f" AS u{t}, sum(c{t}) AS n{t}"
            for t in _TYPES
        )
        an.command(
            f"INSERT INTO {an.table('stat_summary')} ({_SUMMARY_COLUMNS})"
            f" SELECT {literal(a)}, {p}, p, 0, t, u, n, {v}"
            f" FROM (SELECT p, {per_type} FROM ({rows}) GROUP BY p)"
            f" ARRAY JOIN [{', '.join(map(str, _TYPES))}] AS t,"
            f" [{', '.join(f'u{t}' for t in _TYPES)}] AS u,"
            f" [{', '.join(f'n{t}' for t in _TYPES)}] AS n WHERE n > 0"
        )
        per_user = (
            f"SELECT p, total AS st FROM ({rows})"
            if one_per_user
            else f"SELECT p, sum(total) AS st FROM ({rows}) GROUP BY p, user_key"
        )
        buckets = (
            "SELECT p, countIf(st >= 1 AND st <= 5) AS u1, countIf(st >= 6 AND st <= 10) AS u2,"
            f" countIf(st > 10) AS u3 FROM ({per_user}) GROUP BY p"
        )
        an.command(
            f"INSERT INTO {an.table('stat_dist')} ({_DIST_COLUMNS})"
            f" SELECT {literal(a)}, {p}, p, ci, u, {v} FROM (SELECT p,"
            " arrayJoin([1, 2, 3]) AS ci, multiIf(ci = 1, u1, ci = 2, u2, u3) AS u"
            f" FROM ({buckets})) WHERE u > 0"
        )
    if follower_base:
        followers = current_followers_version(an, a)
        for s in starts:
            _silent_followers(an, a, tz, period, s, followers, day_runs, v)


def _silent_followers(
    an: Analytics,
    a: int,
    tz: str,
    period: Period,
    start: date,
    followers: int,
    day_runs: dict[date, int],
    v: int,
) -> None:
    """count_interval 0: followers at the end of the period who sent nothing in it.

    Followers are the imported list minus users whose latest follow event says otherwise,
    plus users whose latest follow event is a subscribe; at equal CreateTime
    ``unsubscribe`` wins (as on SQL: the conservative reading).
    """
    end = period_end_timestamp(period, start, tz)
    last = period_last_day(period, start)
    runs = sorted((d, n) for d, n in day_runs.items() if start <= d <= last)
    latest_event = (
        "SELECT openid, toUInt8(0) AS listed, toUInt8(1) AS has_event,"
        " toUInt8(argMax(event, create_time * 2 + (event = 'unsubscribe')) = 'subscribe') AS sub"
        f" FROM {an.table('events')} WHERE account_id = {literal(a)}"
        f" AND event IN ('subscribe', 'unsubscribe') AND create_time < {end} GROUP BY openid"
    )
    listed = (
        "SELECT openid, toUInt8(1) AS listed, toUInt8(0) AS has_event, toUInt8(0) AS sub"
        f" FROM {an.table('followers')}"
        f" WHERE account_id = {literal(a)} AND version = {followers}"
    )
    following = (
        f"SELECT openid FROM ({listed} UNION ALL {latest_event}) GROUP BY openid"
        " HAVING (max(has_event) = 1 AND max(sub) = 1) OR (max(has_event) = 0 AND max(listed) = 1)"
    )
    senders = ""
    if runs:
        senders = (
            f" WHERE {ch.user_key('openid')} GLOBAL NOT IN (SELECT user_key"
            f" FROM {an.table(USER_DAY)}"
            f" WHERE account_id = {literal(a)} AND (day, version) IN {tuple_set(runs)})"
        )
    an.command(
        f"INSERT INTO {an.table('stat_dist')} ({_DIST_COLUMNS})"
        f" SELECT {literal(a)}, {literal(period.value)}, {literal(start)}, 0, count(), {v}"
        f" FROM ({following}){senders}"
    )
