"""Deciding what to compute (pure: no I/O).

A rollup *key* is a (period, start) pair where period is day, week or month; a day key
covers the day's hourly rows, daily rows, daily distribution and its user-day rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta

from msgcube.domain.endpoints import Period
from msgcube.domain.periods import (
    PeriodKey,
    has_ended,
    period_last_day,
    period_start,
    periods_touching,
)

ROLLUP_PERIODS: tuple[Period, ...] = (Period.DAY, Period.WEEK, Period.MONTH)
_ORDER = {p: i for i, p in enumerate(ROLLUP_PERIODS)}


def keys_for_days(days: Iterable[date]) -> set[PeriodKey]:
    """The day, week and month of each day: what a new message there makes dirty."""
    keys: set[PeriodKey] = set()
    for d in days:
        for p in ROLLUP_PERIODS:
            keys.add((p, period_start(p, d)))
    return keys


def keys_from(first: date, today: date) -> set[PeriodKey]:
    """Every period that overlaps ``[first, today]``.

    A subscribe or unsubscribe on ``first`` changes who is a follower at the end of every
    later period, so count_interval 0 of all of them must be recomputed.
    """
    if first > today:
        return set()
    return {(p, s) for p in ROLLUP_PERIODS for s in periods_touching(p, first, today)}


def closed(keys: Iterable[PeriodKey], today: date) -> list[PeriodKey]:
    """The keys whose period has ended, days first, then weeks, then months, by date."""
    return sorted((k for k in keys if has_ended(k[0], k[1], today)), key=_sort_key)


def _sort_key(key: PeriodKey) -> tuple[int, date]:
    return _ORDER[key[0]], key[1]


def pending(
    states: Mapping[PeriodKey, tuple[int, int]],
    today: date,
    *,
    expected: Iterable[PeriodKey] = (),
) -> list[PeriodKey]:
    """Closed keys that need computing: dirty ones, and ``expected`` ones never computed.

    ``expected`` lists periods that must have rows even without any message (accounts
    whose follower base is known report count_interval 0 for every period).
    """
    keys = {k for k, (dirty, done) in states.items() if dirty > done}
    keys.update(k for k in expected if k not in states)
    return closed(keys, today)


def expected_keys(stats_since: date | None, today: date) -> set[PeriodKey]:
    """Every closed period from the account's first day of data to yesterday."""
    if stats_since is None:
        return set()
    return keys_from(stats_since, today - timedelta(days=1))


def needed_for(keys: Iterable[PeriodKey]) -> set[PeriodKey]:
    """Days whose user-day rows a week or month key reads (they must be fresh first)."""
    out: set[PeriodKey] = set()
    for p, s in keys:
        if p is Period.DAY:
            continue
        out.update((Period.DAY, d) for d in periods_touching(Period.DAY, s, period_last_day(p, s)))
    return out
