"""THE table of the datacube endpoints: the seven of message analysis, two of interface analysis.

Everything that differs between the endpoints lives in ``ENDPOINTS`` and nowhere else:
the web routes, the request validation, the client's window splitting, the CLI's help and
the docs all read it. Adding an endpoint (say, WeChat's keyword data, should it ever ship)
is one row here.

Interface analysis (接口分析, ``getinterfacesummary[hour]``) reports the relay's timings of
the account's own server; its rows are a third kind, and authorizer tokens need
permission set 3 for it instead of 1 (``func_id``).

Spans follow the contract: ``end - begin`` (in days) must be *less than* the span, so span 1
means "the same day". ``classic`` is WeChat's original table (7/1/30/30/15/30/30);
``current`` is the stricter wording of WeChat's newer per-endpoint pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Period(StrEnum):
    """The period one row covers. Hour rows are hours *of a day*."""

    DAY = "day"
    HOUR = "hour"
    WEEK = "week"
    MONTH = "month"


class RowKind(StrEnum):
    """Summary rows count users and messages per msg_type; dist rows count users per bucket;
    interface rows count and time the pushes relayed to the account's server."""

    SUMMARY = "summary"
    DIST = "dist"
    INTERFACE = "interface"


MEASURES: dict[RowKind, tuple[str, ...]] = {
    RowKind.SUMMARY: ("msg_user", "msg_count"),
    RowKind.DIST: ("msg_user",),
    RowKind.INTERFACE: ("callback_count", "fail_count", "total_time_cost", "max_time_cost"),
}
"""The counted fields of a row, per kind, in WeChat's order (the rest identify the row)."""

_KEYS: dict[RowKind, tuple[str, ...]] = {
    RowKind.SUMMARY: ("msg_type",),
    RowKind.DIST: ("count_interval",),
    RowKind.INTERFACE: (),
}

# The words of endpoint names, for WeChat's camel-cased cloud-call names.
_WORDS = ("get", "upstream", "msg", "dist", "hour", "week", "month", "interface", "summary")


class SpanProfile(StrEnum):
    """Which max-span table applies (see the module docstring)."""

    CLASSIC = "classic"
    CURRENT = "current"


SPAN_PROFILES: tuple[str, ...] = tuple(p.value for p in SpanProfile)
"""The profiles' names, as settings, flags and the client spell them."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ``datacube/<name>`` endpoint."""

    name: str
    period: Period
    kind: RowKind
    span_classic: int
    span_current: int
    title_zh: str
    title_en: str
    func_id: int = 1
    """The permission set (权限集) an authorizer token needs: 1 消息管理, 3 账号服务."""

    @property
    def path(self) -> str:
        return f"/datacube/{self.name}"

    @property
    def cloud_name(self) -> str:
        """WeChat's cloud-call name, e.g. ``officialAccount.datacube.getUpstreamMsgHour``."""
        words = _split_words(self.name)
        return "officialAccount.datacube." + words[0] + "".join(w.capitalize() for w in words[1:])

    @property
    def fields(self) -> tuple[str, ...]:
        """Row fields, in the order WeChat documents them."""
        return self.keys + MEASURES[self.kind]

    @property
    def keys(self) -> tuple[str, ...]:
        """The fields that identify a row: ref_date[, ref_hour][, msg_type | count_interval]."""
        hour = ("ref_hour",) if self.period is Period.HOUR else ()
        return ("ref_date", *hour, *_KEYS[self.kind])

    @property
    def label_period(self) -> Period:
        """The period a ``ref_date`` labels: hour rows are labelled with their day."""
        return Period.DAY if self.period is Period.HOUR else self.period

    def max_span(self, profile: str = "classic") -> int:
        if profile == "classic":
            return self.span_classic
        if profile == "current":
            return self.span_current
        raise ValueError(f"unknown span profile {profile!r}; expected one of {SPAN_PROFILES}")


def _split_words(name: str) -> list[str]:
    # "getupstreammsgdistweek" -> ["get", "upstream", "msg", "dist", "week"]
    parts: list[str] = []
    while name:
        word = next((w for w in _WORDS if name.startswith(w)), None)
        if word is None:
            raise ValueError(f"cannot split endpoint name at {name!r}")
        parts.append(word)
        name = name[len(word) :]
    return parts


# Laid out by hand: one endpoint per row reads as a table; one field per line would not.
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("getupstreammsg", Period.DAY, RowKind.SUMMARY, 7, 7,
             "获取消息发送概况数据", "Message sending overview"),
    Endpoint("getupstreammsghour", Period.HOUR, RowKind.SUMMARY, 1, 1,
             "获取消息发送分时数据", "Message sending by hour"),
    Endpoint("getupstreammsgweek", Period.WEEK, RowKind.SUMMARY, 30, 1,
             "获取消息发送周数据", "Message sending by week"),
    Endpoint("getupstreammsgmonth", Period.MONTH, RowKind.SUMMARY, 30, 1,
             "获取消息发送月数据", "Message sending by month"),
    Endpoint("getupstreammsgdist", Period.DAY, RowKind.DIST, 15, 15,
             "获取消息发送分布数据", "Message sending distribution"),
    Endpoint("getupstreammsgdistweek", Period.WEEK, RowKind.DIST, 30, 15,
             "获取消息发送分布周数据", "Message sending distribution by week"),
    Endpoint("getupstreammsgdistmonth", Period.MONTH, RowKind.DIST, 30, 15,
             "获取消息发送分布月数据", "Message sending distribution by month"),
    Endpoint("getinterfacesummary", Period.DAY, RowKind.INTERFACE, 30, 30,
             "获取接口分析数据", "Interface analysis", func_id=3),
    Endpoint("getinterfacesummaryhour", Period.HOUR, RowKind.INTERFACE, 1, 1,
             "获取接口分析分时数据", "Interface analysis by hour", func_id=3),
)  # fmt: skip

BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}


def endpoint(name: str) -> Endpoint:
    """Look an endpoint up by name; ``KeyError`` names the valid ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown endpoint {name!r}; expected one of {', '.join(BY_NAME)}") from None
