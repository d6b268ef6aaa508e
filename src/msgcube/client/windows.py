"""Splitting a date range into the fewest calls each endpoint's max span allows.

WeChat rejects a call whose ``end_date - begin_date`` reaches the endpoint's max span
(61501), so asking for a year means many calls. Which calls is decided here, from the
endpoint table alone, so that every endpoint added to ``ENDPOINTS`` is split correctly.

A row is labelled with the first day of its period (the day itself, the Monday of its
week, the 1st of its month) and is returned when that label lies in ``[begin, end]`` and
the period has ended. So a call only needs to cover *labels*: the planner lists the
labels the caller's range reports, then packs consecutive labels greedily into windows
whose first and last label are less than the span apart. Greedy packing of points on a
line is optimal, so the number of calls is the minimum: 53 for a year of
``getupstreammsg`` (span 7), 365 for ``getupstreammsghour`` (span 1), 11 for a year of
weeks (five Mondays fit in 30 days) and 11 for twelve months (February and March fit in
one 30-day window).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from msgcube.domain.endpoints import Endpoint, endpoint
from msgcube.domain.periods import DATA_FLOOR, has_ended, periods_between

Row = dict[str, Any]
"""One row of a datacube ``list``, exactly as WeChat sends it."""

DateLike = date | str
"""A ``datetime.date`` or a ``YYYY-MM-DD`` string."""

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")
_MEASURES = frozenset({"msg_user", "msg_count"})


def as_date(value: DateLike) -> date:
    """A ``date`` from a ``date`` or a strict ``YYYY-MM-DD`` string (``ValueError`` otherwise).

    Checked here rather than left to the server: a typo should fail before any call is made.
    """
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_RE.match(value):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ValueError(f"expected a date or a 'YYYY-MM-DD' string, got {value!r}")


def as_endpoint(value: str | Endpoint) -> Endpoint:
    """An ``Endpoint`` from itself or its name (``KeyError`` naming the valid ones)."""
    return value if isinstance(value, Endpoint) else endpoint(value)


def key_fields(ep: Endpoint) -> tuple[str, ...]:
    """The fields that identify a row: ref_date, [ref_hour,] msg_type | count_interval."""
    return tuple(f for f in ep.fields if f not in _MEASURES)


def measure_fields(ep: Endpoint) -> tuple[str, ...]:
    """The counted fields of a row: msg_user[, msg_count]."""
    return tuple(f for f in ep.fields if f in _MEASURES)


def row_key(ep: Endpoint, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The sort key WeChat orders rows by (ISO date strings sort like dates)."""
    return tuple(row[f] for f in key_fields(ep))


def sort_rows(ep: Endpoint, rows: Iterable[Row]) -> list[Row]:
    """Rows in WeChat's order: ref_date, then ref_hour, then msg_type / count_interval."""
    return sorted(rows, key=lambda row: row_key(ep, row))


@dataclass(frozen=True, slots=True)
class Window:
    """One call: ``[begin, end]`` and the period labels it reports (in order)."""

    begin: date
    end: date
    labels: tuple[date, ...]

    @property
    def body(self) -> dict[str, str]:
        """The JSON body WeChat documents: ``{"begin_date": ..., "end_date": ...}``."""
        return {"begin_date": self.begin.isoformat(), "end_date": self.end.isoformat()}


def reported_labels(ep: Endpoint, begin: date, end: date, *, today: date) -> list[date]:
    """Labels of the periods a ``[begin, end]`` query reports on ``today``.

    ``end`` is capped at yesterday and ``begin`` raised to 2014-12-01 (WeChat keeps
    nothing earlier, so asking would only spend calls). Periods that have not ended are
    left out: WeChat does not report them yet.
    """
    period = ep.label_period
    first = max(begin, DATA_FLOOR)
    last = min(end, today - timedelta(days=1))
    return [s for s in periods_between(period, first, last) if has_ended(period, s, today)]


def pack(labels: Sequence[date], span: int) -> list[Window]:
    """Pack ascending labels greedily into windows with ``last - first < span`` days."""
    if span < 1:
        raise ValueError(f"a max span is at least 1 day, got {span}")
    windows: list[Window] = []
    group: list[date] = []
    for label in labels:
        if group and (label - group[0]).days >= span:
            windows.append(Window(group[0], group[-1], tuple(group)))
            group = []
        group.append(label)
    if group:
        windows.append(Window(group[0], group[-1], tuple(group)))
    return windows


def plan_windows(
    ep: str | Endpoint,
    begin: DateLike,
    end: DateLike,
    *,
    today: date,
    profile: str = "classic",
) -> list[Window]:
    """The fewest calls that return every row ``[begin, end]`` would, in date order.

    ``today`` is the account's local date (it decides "yesterday" and which weeks and
    months have ended); ``profile`` picks the span column of the endpoint table.
    """
    ep = as_endpoint(ep)
    first, last = as_date(begin), as_date(end)
    if first > last:
        raise ValueError(f"begin {first} is after end {last}")
    return pack(reported_labels(ep, first, last, today=today), ep.max_span(profile))
