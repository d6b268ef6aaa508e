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
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from msgcube.domain.endpoints import MEASURES, Endpoint, endpoint
from msgcube.domain.windows import Window, pack, reported_labels

Row = dict[str, Any]
"""One row of a datacube ``list``, exactly as WeChat sends it."""

DateLike = date | str
"""A ``datetime.date`` or a ``YYYY-MM-DD`` string."""

_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}\Z")


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
    return ep.keys


def measure_fields(ep: Endpoint) -> tuple[str, ...]:
    """The counted fields of a row: msg_user[, msg_count], or the interface timings."""
    return MEASURES[ep.kind]


def row_key(ep: Endpoint, row: Mapping[str, Any]) -> tuple[Any, ...]:
    """The sort key WeChat orders rows by (ISO date strings sort like dates)."""
    return tuple(row[f] for f in key_fields(ep))


def sort_rows(ep: Endpoint, rows: Iterable[Row]) -> list[Row]:
    """Rows in WeChat's order: ref_date, then ref_hour, then msg_type / count_interval."""
    return sorted(rows, key=lambda row: row_key(ep, row))


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
