"""THE table of the seven message-analysis endpoints.

Everything that differs between the endpoints lives in ``ENDPOINTS`` and nowhere else:
the web routes, the request validation, the client's window splitting, the CLI's help and
the docs all read it. Adding an endpoint (say, WeChat's keyword data, should it ever ship)
is one row here.

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
    """Summary rows count users and messages per msg_type; dist rows count users per bucket."""

    SUMMARY = "summary"
    DIST = "dist"


class SpanProfile(StrEnum):
    """Which max-span table applies (see the module docstring)."""

    CLASSIC = "classic"
    CURRENT = "current"


SPAN_PROFILES: tuple[str, ...] = tuple(SpanProfile)


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

    @property
    def path(self) -> str:
        return f"/datacube/{self.name}"

    @property
    def cloud_name(self) -> str:
        """WeChat's cloud-call name, e.g. ``officialAccount.datacube.getUpstreamMsgHour``."""
        suffix = self.name.removeprefix("getupstreammsg")
        return "officialAccount.datacube.getUpstreamMsg" + "".join(
            part.capitalize() for part in _split_suffix(suffix)
        )

    @property
    def fields(self) -> tuple[str, ...]:
        """Row fields, in the order WeChat documents them."""
        if self.kind is RowKind.DIST:
            return ("ref_date", "count_interval", "msg_user")
        if self.period is Period.HOUR:
            return ("ref_date", "ref_hour", "msg_type", "msg_user", "msg_count")
        return ("ref_date", "msg_type", "msg_user", "msg_count")

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


def _split_suffix(suffix: str) -> list[str]:
    # "distweek" -> ["dist", "week"]; "" -> []
    parts: list[str] = []
    for word in ("dist", "hour", "week", "month"):
        if suffix.startswith(word):
            parts.append(word)
            suffix = suffix[len(word) :]
    return parts


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
)  # fmt: skip

BY_NAME: dict[str, Endpoint] = {e.name: e for e in ENDPOINTS}


def endpoint(name: str) -> Endpoint:
    """Look an endpoint up by name; ``KeyError`` names the valid ones."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown endpoint {name!r}; expected one of {', '.join(BY_NAME)}") from None
