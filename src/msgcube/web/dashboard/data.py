"""Every number the dashboard shows comes from ``serve_rows`` — here is how it is asked.

The API caps each call's range (the endpoint table's max span, 1 day for hours and up to
30 days for the others), while a dashboard shows months. ``fetch_rows`` asks
``serve_rows`` once per window of at most the max span and concatenates the answers.
Windows cover the *period labels* in the range (days, Mondays, 1sts), consecutive labels
packed greedily, so every label lies in exactly one window: the result is exactly the
list one call over the whole range would return if WeChat allowed it.

The key numbers are sums of those rows and nothing else: 消息发送次数 is Σ msg_count over
the message types; 消息发送人数 is Σ msg_user over count_interval 1–3 of the distribution
(the distinct senders of the day, a contract invariant — adding msg_user over types would count a
user who sent text and an image twice); 人均发送次数 is their quotient.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from msgcube.domain.endpoints import BY_NAME, Endpoint, RowKind
from msgcube.domain.periods import (
    DATA_FLOOR,
    local_today,
    parse_date,
    periods_between,
)
from msgcube.domain.windows import pack
from msgcube.errors import ApiError
from msgcube.rollup.query import Row, Served, serve_rows
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store

MAX_RANGE_DAYS = 3 * 366
"""The longest range one dashboard request may ask for (bounds the number of calls)."""

SUMMARY_BY_PERIOD: dict[str, Endpoint] = {
    "day": BY_NAME["getupstreammsg"],
    "week": BY_NAME["getupstreammsgweek"],
    "month": BY_NAME["getupstreammsgmonth"],
}
DIST_BY_PERIOD: dict[str, Endpoint] = {
    "day": BY_NAME["getupstreammsgdist"],
    "week": BY_NAME["getupstreammsgdistweek"],
    "month": BY_NAME["getupstreammsgdistmonth"],
}
HOUR = BY_NAME["getupstreammsghour"]


@dataclass(frozen=True, slots=True)
class Query:
    """How to ask: the account, the store, the clock and the API's settings."""

    store: Store
    account: Account
    now: datetime
    span_profile: str = "classic"
    ready_at: time = time(0, 0)

    @property
    def today(self) -> date:
        return local_today(self.now, self.account.tz)

    @property
    def yesterday(self) -> date:
        return self.today - timedelta(days=1)


Fetched = Served
"""Rows of one endpoint over a range (``rollup.query.Served``)."""


def windows(ep: Endpoint, begin: date, end: date, span: int) -> list[list[date]]:
    """The period labels in ``[begin, end]``, packed into runs that span less than ``span``."""
    return [list(w.labels) for w in pack(list(periods_between(ep.label_period, begin, end)), span)]


def fetch_rows(q: Query, ep: Endpoint, begin: date, end: date) -> Fetched:
    """``serve_rows`` over ``[begin, end]`` in as many calls as the max span needs.

    ``end`` is capped at yesterday (the API refuses later days) and ``begin`` raised to
    2014-12-01 (there is nothing before). A period ending yesterday before ``ready_at``
    is left out (``not_ready``); other validation errors propagate.
    """
    if begin > end:
        raise ApiError(61501, "begin is after end")
    end = min(end, q.yesterday)
    begin = max(begin, DATA_FLOOR)
    rows: list[Row] = []
    served: list[date] = []
    not_ready = False
    for labels in windows(ep, begin, end, ep.max_span(q.span_profile)):
        part = serve_rows(
            q.store,
            q.account,
            ep,
            labels[0],
            labels[-1],
            q.now,
            span_profile=q.span_profile,
            ready_at=q.ready_at,
            leave_out_not_ready=True,
        )
        rows += part.rows
        served += part.labels
        not_ready = not_ready or part.not_ready
    return Fetched(rows, served, not_ready)


def parse_range(begin_text: str | None, end_text: str | None) -> tuple[date, date]:
    """Two ``YYYY-MM-DD`` query parameters (61500), in order and not too far apart (61501)."""
    if not begin_text or not end_text:
        raise ApiError(47001, "begin and end are required")
    begin, end = parse_date(begin_text), parse_date(end_text)
    if begin > end:
        raise ApiError(61501, "begin is after end")
    if (end - begin).days >= MAX_RANGE_DAYS:
        raise ApiError(61501, f"the dashboard shows at most {MAX_RANGE_DAYS} days at once")
    return begin, end


def default_range(period: str, yesterday: date) -> tuple[date, date]:
    """What the page shows first: 30 days, 12 weeks or 12 months up to yesterday."""
    if period == "week":
        return yesterday - timedelta(days=7 * 12 - 1), yesterday
    if period == "month":
        return (yesterday.replace(day=1) - timedelta(days=335)).replace(day=1), yesterday
    return yesterday - timedelta(days=29), yesterday


# --------------------------------------------------------------------------- key numbers


@dataclass(frozen=True, slots=True)
class DayFigures:
    """The three key numbers of one day, from its served rows."""

    day: date
    msg_user: int
    msg_count: int

    @property
    def per_user(self) -> float | None:
        return self.msg_count / self.msg_user if self.msg_user else None

    def value(self, metric: str) -> float | None:
        if metric == "per_user":
            return self.per_user
        return float(getattr(self, metric))


def day_figures(day: date, summary: Iterable[Row], dist: Iterable[Row]) -> DayFigures:
    iso = day.isoformat()
    return DayFigures(
        day=day,
        msg_user=sum(r["msg_user"] for r in dist if r["ref_date"] == iso and r["count_interval"]),
        msg_count=sum(r["msg_count"] for r in summary if r["ref_date"] == iso),
    )


@dataclass(frozen=True, slots=True)
class KeyNumbers:
    """Yesterday's figures and those of the day, week (7 days) and month (30 days) before."""

    current: DayFigures | None
    before: dict[str, DayFigures]
    not_ready: bool = False

    def change(self, metric: str, against: str) -> float | None:
        """Relative change of ``metric`` against ``day``/``week``/``month``; None if undefined."""
        if self.current is None or against not in self.before:
            return None
        now, then = self.current.value(metric), self.before[against].value(metric)
        if now is None or not then:
            return None
        return (now - then) / then


COMPARISONS: tuple[tuple[str, int], ...] = (("day", 1), ("week", 7), ("month", 30))
METRICS: tuple[str, ...] = ("msg_user", "msg_count", "per_user")


def key_numbers(q: Query) -> KeyNumbers:
    yesterday = q.yesterday
    summary_ep, dist_ep = SUMMARY_BY_PERIOD["day"], DIST_BY_PERIOD["day"]

    def figures(day: date) -> DayFigures | None:
        summary = fetch_rows(q, summary_ep, day, day)
        dist = fetch_rows(q, dist_ep, day, day)
        if summary.not_ready or dist.not_ready:
            return None
        return day_figures(day, summary.rows, dist.rows)

    current = figures(yesterday)
    if current is None:
        return KeyNumbers(None, {}, not_ready=True)
    before: dict[str, DayFigures] = {}
    for name, days in COMPARISONS:
        found = figures(yesterday - timedelta(days=days))
        if found is not None:
            before[name] = found
    return KeyNumbers(current, before)


# --------------------------------------------------------------------------- CSV


def csv_text(ep: Endpoint, rows: Sequence[Row]) -> str:
    """The rows as CSV: a header of the endpoint's field names, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(ep.fields)
    for row in rows:
        writer.writerow([row[f] for f in ep.fields])
    return out.getvalue()


def filter_type(ep: Endpoint, rows: list[Row], msg_type: int | None) -> list[Row]:
    """Summary rows of one msg_type (all rows when ``msg_type`` is None or ep is a dist)."""
    if msg_type is None or ep.kind is RowKind.DIST:
        return rows
    return [r for r in rows if r["msg_type"] == msg_type]
