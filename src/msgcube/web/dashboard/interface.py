"""The 接口分析 (interface analysis) panel: the relay's timings of the account's server.

Like every other panel it asks ``data.fetch_rows`` — the same ``served_list`` the API
answers with — and derives nothing but quotients: the mean time is
total_time_cost / callback_count and the failure rate fail_count / callback_count, as
WeChat defines them. Days inside the range without a relayed push show zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from msgcube.domain.endpoints import BY_NAME
from msgcube.web.dashboard import data

INTERFACE_DAY = BY_NAME["getinterfacesummary"]


@dataclass(frozen=True, slots=True)
class InterfaceDay:
    """One day of getinterfacesummary (zeros for a day without calls)."""

    day: date
    callback_count: int = 0
    fail_count: int = 0
    total_time_cost: int = 0
    max_time_cost: int = 0

    @property
    def mean_time_cost(self) -> float | None:
        return self.total_time_cost / self.callback_count if self.callback_count else None

    @property
    def fail_rate(self) -> float | None:
        return self.fail_count / self.callback_count if self.callback_count else None


@dataclass(frozen=True, slots=True)
class InterfacePanel:
    days: list[InterfaceDay]
    not_ready: bool

    @property
    def has_calls(self) -> bool:
        return any(d.callback_count for d in self.days)


def interface_panel(q: data.Query, begin: date, end: date) -> InterfacePanel:
    """Every served day of ``[begin, end]``, newest first, from the API's rows."""
    fetched = data.fetch_rows(q, INTERFACE_DAY, begin, end)
    by_day = {r["ref_date"]: r for r in fetched.rows}
    days = []
    for d in sorted(fetched.labels, reverse=True):
        row = by_day.get(d.isoformat(), {})
        days.append(InterfaceDay(d, *(row.get(f, 0) for f in INTERFACE_DAY.fields[1:])))
    return InterfacePanel(days, fetched.not_ready)
