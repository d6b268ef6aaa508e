"""A brute-force oracle for the datacube endpoints (the contract): the seven
``getupstreammsg*`` and the two ``getinterfacesummary*`` (summed from the relay's calls).

It is deliberately *independent* of the implementation: it never imports
``msgcube.rollup`` or ``msgcube.storage`` (nor ``msgcube.domain.periods`` or
``msgcube.domain.messages``). Only the endpoint table is shared, because the contract says one
table drives everything; every other rule — local days from ``CreateTime``, the msg_type
mapping, Monday weeks, 1st-of-month months, the span rule, "the whole period has ended",
count intervals and the follower rule of count_interval 0 — is re-derived here from the
contract's text, as naively as possible: every statistic is recomputed from the raw pushes by
looping over them, nothing is cached, nothing is aggregated in layers.

Usage::

    acct = OracleAccount("Asia/Shanghai")
    acct.store([{"FromUserName": "u", "CreateTime": 1767196800, "MsgType": "text", "MsgId": 1}])
    acct.import_followers(["u", "v"], today=date(2026, 1, 2))
    rows = acct.served("getupstreammsgdist", "2025-12-31", "2026-01-01", now)
    acct.record_call(received_at=1767196800, cost_ms=120, failed=False)  # a relayed push
    rows = acct.served("getinterfacesummaryhour", "2025-12-31", "2025-12-31", now)

``served`` returns exactly the ``list`` the API must serve, or raises ``OracleError``
with the errcode of the contract's checks (61500 / 61501; 47001 and the ready_at rule are the
caller's business).

One reading the contract leaves open is made explicit here: an account's statistics start
on its *first day* — the local day of its first stored record (any message or event),
or, when the follower list was imported before any record, the day of that import if
it is earlier. No count_interval 0 row exists for a period that ended before that day:
msgcube cannot know who followed the account then, and holds no data about that time.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from msgcube.domain.endpoints import BY_NAME

MSG_TYPES: dict[str, int] = {
    "text": 1,
    "image": 2,
    "voice": 3,
    "video": 4,
    "shortvideo": 4,
    "link": 6,
}
"""Counted types. Every other MsgType (location, file, event, …) is not a counted message."""

_STRICT_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

Row = dict[str, Any]


class OracleError(Exception):
    """The errcode the contract requires for a request."""

    def __init__(self, errcode: int) -> None:
        super().__init__(errcode)
        self.errcode = errcode


# --------------------------------------------------------------------------- time


def local_datetime(create_time: int, tz: str) -> datetime:
    return datetime.fromtimestamp(create_time, ZoneInfo(tz))


def local_midnight(day: date, tz: str) -> int:
    """Unix time of 00:00 local time on ``day``."""
    return int(datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(tz)).timestamp())


def period_of(endpoint_name: str) -> str:
    """'day', 'week' or 'month': what one ``ref_date`` labels (hour rows belong to a day)."""
    if endpoint_name.startswith("getinterfacesummary"):
        return "day"
    name = endpoint_name.removeprefix("getupstreammsg").removeprefix("dist")
    return {"": "day", "hour": "day", "week": "week", "month": "month"}[name]


def label_of(period: str, day: date) -> date:
    if period == "week":
        return day - timedelta(days=day.weekday())  # Monday
    if period == "month":
        return date(day.year, day.month, 1)
    return day


def last_day_of(period: str, label: date) -> date:
    if period == "week":
        return label + timedelta(days=6)
    if period == "month":
        return date(label.year, label.month, calendar.monthrange(label.year, label.month)[1])
    return label


def days_between(first: date, last: date) -> Iterator[date]:
    d = first
    while d <= last:
        yield d
        d += timedelta(days=1)


def interval_of(count: int) -> int:
    """count_interval: 1 for 1–5 messages, 2 for 6–10, 3 for more than 10."""
    assert count >= 1
    if count <= 5:
        return 1
    if count <= 10:
        return 2
    return 3


# --------------------------------------------------------------------------- validation


def parse_date(text: str) -> date:
    if not _STRICT_DATE.fullmatch(text):
        raise OracleError(61500)
    try:
        return date(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    except ValueError:
        raise OracleError(61500) from None


def validate(
    endpoint_name: str, begin_text: str, end_text: str, today: date, profile: str
) -> tuple[date, date]:
    """The contract's date checks in order: both formats, then order, yesterday, span."""
    begin, end = parse_date(begin_text), parse_date(end_text)
    spans = {
        "classic": BY_NAME[endpoint_name].span_classic,
        "current": BY_NAME[endpoint_name].span_current,
    }
    if begin > end or end >= today or (end - begin).days >= spans[profile]:
        raise OracleError(61501)
    return begin, end


# --------------------------------------------------------------------------- the account


@dataclass(frozen=True, slots=True)
class _Msg:
    openid: str
    create_time: int
    msg_type: int | None  # None: stored, not counted


@dataclass
class OracleAccount:
    """Everything stored for one account, kept as plainly as possible."""

    tz: str
    followers: frozenset[str] | None = None
    """The imported follower list; ``None`` while no list was imported (no 0 rows)."""
    messages: dict[int, _Msg] = field(default_factory=dict)
    """MsgId → the first stored message with that id (later ones are retries)."""
    events: set[tuple[str, int, str]] = field(default_factory=set)
    """(FromUserName, CreateTime, Event): the event dedup key is the whole event."""
    import_day: date | None = None
    """The local day a follower list was imported while nothing was stored yet."""
    calls: list[tuple[int, int, bool]] = field(default_factory=list)
    """(received_at, cost_ms, failed) of every push relayed to the account's upstream."""

    def record_call(self, *, received_at: int, cost_ms: int, failed: bool) -> None:
        self.calls.append((received_at, cost_ms, failed))

    def store(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Store pushes in arrival order (WeChat field names, already valid)."""
        for r in records:
            openid, ct = str(r["FromUserName"]), int(r["CreateTime"])
            if r["MsgType"] == "event":
                self.events.add((openid, ct, str(r["Event"])))
            else:
                msg_id = int(r["MsgId"])
                if msg_id not in self.messages:
                    self.messages[msg_id] = _Msg(openid, ct, MSG_TYPES.get(str(r["MsgType"])))

    def import_followers(self, openids: Iterable[str], today: date | None = None) -> None:
        """Replace the follower list. ``today`` (the local date of the import) matters only
        when nothing is stored yet: statistics then start on that day."""
        if self.first_day() is None:
            if today is None:
                raise ValueError("nothing stored yet: pass today= (statistics start then)")
            self.import_day = today
        self.followers = frozenset(openids)

    # ------------------------------------------------------------------ derived facts

    def day_of(self, create_time: int) -> date:
        return local_datetime(create_time, self.tz).date()

    def first_day(self) -> date | None:
        """The day statistics start: the first stored record's (a retry or a reused MsgId
        stores nothing), or an earlier follower import's made while nothing was stored."""
        times = [m.create_time for m in self.messages.values()] + [t for _, t, _ in self.events]
        days = {self.day_of(t) for t in times}
        if self.import_day is not None:
            days.add(self.import_day)
        return min(days, default=None)

    def counted(self, first: date, last: date) -> list[tuple[str, int, int]]:
        """(openid, msg_type, local hour) of each counted message on local days [first, last]."""
        out = []
        for m in self.messages.values():
            if m.msg_type is None:
                continue
            local = local_datetime(m.create_time, self.tz)
            if first <= local.date() <= last:
                out.append((m.openid, m.msg_type, local.hour))
        return out

    def is_follower(self, openid: str, before: int) -> bool:
        """Follower just before Unix time ``before``: the latest subscribe/unsubscribe event
        with CreateTime < before decides (unsubscribe wins a tie); else the imported list."""
        assert self.followers is not None
        follow = [
            (ct, ev)
            for (o, ct, ev) in self.events
            if o == openid and ct < before and ev in ("subscribe", "unsubscribe")
        ]
        if not follow:
            return openid in self.followers
        latest = max(ct for ct, _ in follow)
        at_latest = {ev for ct, ev in follow if ct == latest}
        return "unsubscribe" not in at_latest

    def followers_at(self, before: int) -> set[str]:
        assert self.followers is not None
        candidates = set(self.followers) | {o for (o, _, _) in self.events}
        return {o for o in candidates if self.is_follower(o, before)}

    # ------------------------------------------------------------------ the API

    def labels(self, period: str, begin: date, end: date, today: date) -> list[date]:
        """Label dates inside [begin, end] whose whole period ended before ``today``."""
        return [
            d
            for d in days_between(begin, end)
            if label_of(period, d) == d and last_day_of(period, d) < today
        ]

    def served(
        self,
        endpoint_name: str,
        begin_text: str,
        end_text: str,
        now: datetime,
        profile: str = "classic",
    ) -> list[Row]:
        today = now.astimezone(ZoneInfo(self.tz)).date()
        begin, end = validate(endpoint_name, begin_text, end_text, today, profile)
        period = period_of(endpoint_name)
        rows: list[Row] = []
        for label in self.labels(period, begin, end, today):
            last = last_day_of(period, label)
            msgs = self.counted(label, last)
            if endpoint_name.startswith("getinterfacesummary"):
                rows += self._interface_rows(label, endpoint_name.endswith("hour"))
            elif endpoint_name == "getupstreammsghour":
                rows += self._hour_rows(label, msgs)
            elif "dist" in endpoint_name:
                rows += self._dist_rows(label, last, msgs)
            else:
                rows += self._summary_rows(label, msgs)
        return rows

    def _summary_rows(self, label: date, msgs: list[tuple[str, int, int]]) -> list[Row]:
        rows = []
        for t in sorted({t for _, t, _ in msgs}):
            of_type = [o for o, mt, _ in msgs if mt == t]
            rows.append(
                {
                    "ref_date": label.isoformat(),
                    "msg_type": t,
                    "msg_user": len(set(of_type)),
                    "msg_count": len(of_type),
                }
            )
        return rows

    def _hour_rows(self, label: date, msgs: list[tuple[str, int, int]]) -> list[Row]:
        rows = []
        for hour, t in sorted({(h, t) for _, t, h in msgs}):
            of_cell = [o for o, mt, h in msgs if (h, mt) == (hour, t)]
            rows.append(
                {
                    "ref_date": label.isoformat(),
                    "ref_hour": hour * 100,
                    "msg_type": t,
                    "msg_user": len(set(of_cell)),
                    "msg_count": len(of_cell),
                }
            )
        return rows

    def _dist_rows(self, label: date, last: date, msgs: list[tuple[str, int, int]]) -> list[Row]:
        per_user: dict[str, int] = {}
        for o, _, _ in msgs:
            per_user[o] = per_user.get(o, 0) + 1
        users = {0: 0, 1: 0, 2: 0, 3: 0}
        for n in per_user.values():
            users[interval_of(n)] += 1
        first = self.first_day()
        if self.followers is not None and first is not None and last >= first:
            end_of_period = local_midnight(last + timedelta(days=1), self.tz)
            users[0] = len(self.followers_at(end_of_period) - set(per_user))
        return [
            {"ref_date": label.isoformat(), "count_interval": i, "msg_user": n}
            for i, n in sorted(users.items())
            if n
        ]

    def _interface_rows(self, label: date, hourly: bool) -> list[Row]:
        """Sums over the calls received on local day ``label`` (per local hour if ``hourly``);
        a row only where there was a call."""
        cells: dict[int, list[tuple[int, bool]]] = {}
        for received_at, cost, failed in self.calls:
            local = local_datetime(received_at, self.tz)
            if local.date() == label:
                cells.setdefault(local.hour * 100 if hourly else -1, []).append((cost, failed))
        rows = []
        for ref_hour in sorted(cells):
            calls = cells[ref_hour]
            row: Row = {"ref_date": label.isoformat()}
            if hourly:
                row["ref_hour"] = ref_hour
            row["callback_count"] = len(calls)
            row["fail_count"] = sum(1 for _, failed in calls if failed)
            row["total_time_cost"] = sum(cost for cost, _ in calls)
            row["max_time_cost"] = max(cost for cost, _ in calls)
            rows.append(row)
        return rows
