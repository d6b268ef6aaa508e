"""Splitting a range of period labels into calls that respect an endpoint's max span (pure).

WeChat rejects a call whose ``end_date - begin_date`` reaches the endpoint's max span
(61501). A row is labelled with the first day of its period and returned when that label
lies in ``[begin, end]``, so a call only needs to cover *labels*: consecutive labels are
packed greedily into windows whose first and last label are less than the span apart.
Greedy packing of points on a line is optimal, so the number of calls is the minimum.
The client (asking WeChat or msgcube for long ranges) and the dashboard (asking
``served_list``) both split ranges here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from msgcube.domain.endpoints import Endpoint
from msgcube.domain.periods import DATA_FLOOR, has_ended, periods_between


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
