"""Local days, hours, Monday weeks and calendar months, and WeChat's date-range rules.

All statistics are computed in the account's time zone (default ``Asia/Shanghai``) from
the message's ``CreateTime`` (Unix seconds). A period is *closed* once its last local day
has ended; only closed periods are ever reported (contract: Days, hours, weeks, months).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from msgcube.domain.endpoints import Endpoint, Period
from msgcube.errors import ApiError

PeriodKey = tuple[Period, date]
"""A rollup key: a period (day, week, month) and its start date."""

DEFAULT_TZ = "Asia/Shanghai"
DATA_FLOOR = date(2014, 12, 1)
"""WeChat keeps no data before this day; earlier dates are not an error, they are empty."""

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """A cached ``ZoneInfo``; ``KeyError`` for an unknown zone name."""
    try:
        return ZoneInfo(name)
    except Exception as exc:  # ZoneInfoNotFoundError, ValueError for odd strings
        raise KeyError(f"unknown time zone {name!r}") from exc


def check_tz(name: str) -> str:
    """The one time-zone rule (settings, accounts): an IANA name ``zoneinfo`` knows."""
    try:
        zone(name)
    except KeyError:
        raise ValueError(
            f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)"
        ) from None
    return name


def local_day_hour(create_time: int, tz: str = DEFAULT_TZ) -> tuple[date, int]:
    """The local calendar day and hour (0–23) of a Unix timestamp."""
    quarter = create_time // QUARTER
    hit = _DAY_HOUR.get((tz, quarter))
    if hit is not None:
        return hit
    shared = quarter_day_hour(quarter, tz)
    if shared is None:  # an offset change inside this quarter: no shared answer
        local = datetime.fromtimestamp(create_time, zone(tz))
        return local.date(), local.hour
    if len(_DAY_HOUR) > 200_000:  # about five years of quarter hours
        _DAY_HOUR.clear()
    _DAY_HOUR[(tz, quarter)] = shared
    return shared


def quarter_day_hour(quarter: int, tz: str = DEFAULT_TZ) -> tuple[date, int] | None:
    """The local day and hour every instant of UTC quarter-hour QUARTER (Unix time // 900)
    shares, or ``None`` when they do not all share one.

    Every UTC offset in use is a multiple of 15 minutes and nearly every offset change
    falls on a quarter-hour, so converting once per quarter is exact and takes the zone
    arithmetic off the ingest hot path. Not every change does: Antarctica/Casey moved at
    00:01 local time (16:01 UTC) in 2020–2022, Newfoundland until 2011, so a quarter
    whose first and last second have different offsets is converted per instant.
    """
    z = zone(tz)
    start = quarter * QUARTER
    first = datetime.fromtimestamp(start, z)
    offset = first.utcoffset()
    if offset is None or offset.total_seconds() % QUARTER:
        return None
    if datetime.fromtimestamp(start + QUARTER - 1, z).utcoffset() != offset:
        return None
    return first.date(), first.hour


QUARTER = 900
_DAY_HOUR: dict[tuple[str, int], tuple[date, int]] = {}


def utc_offsets(tz: str, lo: int, hi: int) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Zone TZ's UTC offset (seconds) at Unix time LO, and each change in ``(LO, HI)``
    as (the instant it takes effect, the offset from then on), exact to the second.

    What a statistic needs to find local days and hours without a time-zone database of
    its own (ClickHouse's bundled one can differ from Python's: analytics/rollup.py).
    Offsets are sampled hourly and each change is narrowed to its second; no zone has
    changed its offset twice within an hour.
    """
    z = zone(tz)

    def offset(t: int) -> int:
        found = datetime.fromtimestamp(t, z).utcoffset()
        return int(found.total_seconds()) if found is not None else 0

    base = current = offset(lo)
    changes: list[tuple[int, int]] = []
    t = lo
    while t < hi:
        step = min(t + 3600, hi)
        after = offset(step)
        if after != current:
            before, at = t, step  # offset(before) == current, offset(at) == after
            while at - before > 1:
                mid = (before + at) // 2
                if offset(mid) == current:
                    before = mid
                else:
                    at = mid
            if at < hi:
                changes.append((at, after))
            current = after
        t = step
    return base, tuple(changes)


def week_start(day: date) -> date:
    """The Monday of ``day``'s week (weeks run Monday–Sunday)."""
    return day - timedelta(days=day.weekday())


def month_start(day: date) -> date:
    return day.replace(day=1)


def period_start(period: Period, day: date) -> date:
    """The label date of the period containing ``day`` (hours belong to their day)."""
    if period is Period.WEEK:
        return week_start(day)
    if period is Period.MONTH:
        return month_start(day)
    return day


def period_last_day(period: Period, start: date) -> date:
    """The last local day of the period labelled ``start``."""
    if period is Period.WEEK:
        return start + timedelta(days=6)
    if period is Period.MONTH:
        nxt = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
        return nxt - timedelta(days=1)
    return start


def has_ended(period: Period, start: date, today: date) -> bool:
    """True when every day of the period lies before ``today`` (the local date now)."""
    return period_last_day(period, start) < today


def periods_between(period: Period, first: date, last: date) -> Iterator[date]:
    """Label dates of every period of this kind whose label lies in ``[first, last]``."""
    start = period_start(period, first)
    if start < first:
        start = _next_start(period, start)
    while start <= last:
        yield start
        start = _next_start(period, start)


def periods_touching(period: Period, first: date, last: date) -> Iterator[date]:
    """Label dates of every period of this kind that overlaps ``[first, last]``."""
    start = period_start(period, first)
    while start <= last:
        yield start
        start = _next_start(period, start)


def _next_start(period: Period, start: date) -> date:
    return period_last_day(period, start) + timedelta(days=1)


def period_end_timestamp(period: Period, start: date, tz: str = DEFAULT_TZ) -> int:
    """Unix time of the local midnight that ends the period (exclusive upper bound)."""
    after = period_last_day(period, start) + timedelta(days=1)
    return int(datetime.combine(after, time(0), tzinfo=zone(tz)).timestamp())


def local_today(now: datetime, tz: str = DEFAULT_TZ) -> date:
    """The local date at ``now`` (an aware datetime) in zone ``tz``."""
    return now.astimezone(zone(tz)).date()


@dataclass(frozen=True, slots=True)
class DateRange:
    """A validated ``[begin, end]`` request range (both inclusive)."""

    begin: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.begin).days + 1


def parse_range_body(body: Any) -> tuple[str, str]:
    """The two date strings of a request body, or ``ApiError(47001)``."""
    if not isinstance(body, dict):
        raise ApiError(47001, "body is not a JSON object")
    begin, end = body.get("begin_date"), body.get("end_date")
    if not isinstance(begin, str) or not isinstance(end, str):
        raise ApiError(47001, "begin_date and end_date must both be strings")
    return begin, end


def parse_date(text: str) -> date:
    """A strict ``YYYY-MM-DD`` calendar date, or ``ApiError(61500)``."""
    if not _DATE_RE.match(text):
        raise ApiError(61500, f"{text!r} is not YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ApiError(61500, f"{text!r} is not a calendar date") from None


def validate_range(
    ep: Endpoint, begin_text: str, end_text: str, today: date, profile: str = "classic"
) -> DateRange:
    """The contract's date checks, in order: format (61500), then order, yesterday and span (61501).

    ``today`` is the local date of the account at the time of the request.
    """
    return check_range(ep, parse_date(begin_text), parse_date(end_text), today, profile)


def check_range(
    ep: Endpoint, begin: date, end: date, today: date, profile: str = "classic"
) -> DateRange:
    """``validate_range`` for dates already parsed: order, yesterday and span (61501)."""
    if begin > end:
        raise ApiError(61501, "begin_date is after end_date")
    if end >= today:
        raise ApiError(61501, f"end_date must be at most yesterday ({today - timedelta(days=1)})")
    if (end - begin).days >= ep.max_span(profile):
        raise ApiError(61501, f"{ep.name} spans at most {ep.max_span(profile)} day(s)")
    return DateRange(begin, end)


def reported_periods(ep: Endpoint, rng: DateRange, today: date) -> list[date]:
    """Label dates the endpoint reports for ``rng``: labels inside it whose period has ended.

    Nothing before 2014-12-01 is ever reported, even for pushes dated earlier: WeChat's
    interface keeps no data before that day.
    """
    period = ep.label_period
    # 2014-12-01 is a Monday and a 1st: no period straddles the floor.
    first = max(rng.begin, DATA_FLOOR)
    return [s for s in periods_between(period, first, rng.end) if has_ended(period, s, today)]
