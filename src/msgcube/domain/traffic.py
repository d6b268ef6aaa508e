"""Realistic synthetic WeChat push traffic, for ``msgcube generate``, the demo and benchmarks.

The statistics msgcube computes are only interesting on data that looks like a real
official account's: a follower base that grows and churns, a few very chatty users and
many silent ones, quiet nights and busy evenings, weekends unlike weekdays. This module
produces such traffic as push records in WeChat's own field names (the same dicts
``msgcube import`` reads from JSON Lines), so generated data goes through exactly the
same ingestion path as real data.

It is pure: no I/O, no clock, no global random state. The same arguments always yield
the same records in the same order (byte-identical once serialised), which makes demos
reproducible and lets tests and benchmarks compare numbers across runs.

Model, in brief:

* **Population.** ``users`` people, each with a heavy-tailed (lognormal) activity weight.
  Most followed the account before the first generated day (:func:`initial_followers`);
  the rest subscribe during the window. Anyone may unsubscribe (new followers more
  often, soon after subscribing) and some of those re-subscribe later. A user only ever
  sends messages while subscribed.
* **Volume.** Each day's message total is ``messages_per_day`` scaled by the follower
  base's current activity, a weekend boost, day-to-day noise and the odd spike (an
  article that makes readers reply), normalised so the mean over the window is exactly
  ``messages_per_day``.
* **Timing.** Messages come in short sessions (a user sends one to a few messages seconds
  apart); session start times follow an hourly profile with a 3–5 am low and a 20–22 h
  peak, shaped differently at weekends.

Speed matters (the benchmark asks for millions of records), so a day's work is done in
bulk: senders are drawn in O(1) from a precomputed alias table, the day's records are
sorted once as plain floats, and nothing heavier than a small dict is built per record.
Expect roughly 400k records/s on one core for a 100k-user account.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import math
import random
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from msgcube.domain.periods import DEFAULT_TZ, zone

PushRecord = dict[str, str | int]
"""One push in WeChat's field names, as ``msgcube import`` reads it from a JSON line."""

MSG_TYPE_MIX: tuple[tuple[str, float], ...] = (
    ("text", 0.70),
    ("image", 0.12),
    ("voice", 0.10),
    ("video", 0.02),
    ("shortvideo", 0.01),
    ("link", 0.02),
    ("location", 0.03),
)
"""Share of each push ``MsgType`` among messages (sums to 1): mostly text, as on real accounts."""

# Laid out by hand: twelve hours per row under an hour ruler; one number a line loses the hours.
WEEKDAY_PROFILE: tuple[float, ...] = (
    # 0    1    2    3    4    5    6    7    8    9   10   11
    2.0, 1.2, 0.7, 0.45, 0.4, 0.5, 1.0, 2.0, 3.2, 3.8, 4.0, 4.2,
    # 12  13   14   15   16   17   18   19   20   21   22   23
    4.6, 4.2, 3.8, 3.8, 3.9, 4.0, 4.2, 4.8, 5.6, 6.2, 6.0, 4.0,
)  # fmt: skip
"""Relative message rate per local hour on Monday–Friday: lunch bump, evening peak."""

# Laid out by hand: twelve hours per row, as WEEKDAY_PROFILE.
WEEKEND_PROFILE: tuple[float, ...] = (
    2.8, 1.8, 1.1, 0.6, 0.45, 0.45, 0.6, 1.0, 1.8, 2.8, 3.8, 4.4,
    4.8, 4.6, 4.4, 4.4, 4.4, 4.5, 4.6, 5.0, 5.6, 6.0, 5.8, 4.4,
)  # fmt: skip
"""Saturday and Sunday: people stay up later and start later, the day is flatter."""

WEEKEND_FACTOR = 1.2
"""A weekend day carries this many times a weekday's volume (before normalisation)."""

DEFAULT_MESSAGES_PER_USER_DAY = 0.6
"""Volume when ``messages_per_day`` is not given: this many messages per user per day."""

ACTIVITY_SIGMA = 1.6
"""Lognormal sigma of per-user activity: about 60 % of messages come from the top 10 %."""

ACTIVITY_CLIP = 3.0
"""Activity is clipped at 3 sigma (the top 0.13 %): a person, not a bot, even among a
million followers — the chattiest write a few dozen messages a day, not hundreds."""

SESSION_CONTINUE = 0.4
"""Chance that a session goes on with one more message (mean session ≈ 1.7 messages)."""

SESSION_SAME_TYPE = 0.6
"""Chance that a follow-up message in a session repeats the previous type (voice bursts)."""

JOIN_FRACTION_PER_DAY = 0.003
MAX_JOIN_FRACTION = 0.4
"""Share of the population that subscribes during the window: 0.3 % per day, capped."""

CHURN_MEAN_DAYS = 500.0
"""Mean time to unsubscribe for an established follower (≈ 0.2 % leave per day)."""

QUICK_CHURN_P = 0.12
QUICK_CHURN_MEAN_DAYS = 1.0
"""New followers often leave again within a day or two."""

RESUBSCRIBE_P = 0.2
RESUBSCRIBE_MEAN_DAYS = 10.0
"""Some who leave come back after a while."""

MIN_GAP_DAYS = 0.01
"""At least ~15 minutes between a user's follow events, so they never share a second."""

SPIKE_P = 0.03
"""Chance that a day is a spike day (a post that makes readers write in): 1.6–2.5× volume."""

DAY_NOISE_SIGMA = 0.12

_TYPE_NAMES: tuple[str, ...] = tuple(name for name, _ in MSG_TYPE_MIX)
_TYPE_TABLE_SIZE = 1000
_TYPE_TABLE: tuple[int, ...] = tuple(
    itertools.chain.from_iterable(
        itertools.repeat(i, round(share * _TYPE_TABLE_SIZE))
        for i, (_, share) in enumerate(MSG_TYPE_MIX)
    )
)
"""Type index by ``int(random() * 1000)``: a table lookup is cheaper than a weighted choice."""
assert len(_TYPE_TABLE) == _TYPE_TABLE_SIZE

_TEXT, _IMAGE, _VOICE, _VIDEO, _SHORTVIDEO, _LINK, _LOCATION = range(7)

_TEXTS: tuple[str, ...] = (
    "你好",
    "在吗",
    "谢谢",
    "1",
    "2",
    "好的",
    "客服",
    "人工客服",
    "怎么报名",
    "多少钱",
    "收到",
    "早上好",
    "晚安",
    "哈哈哈",
    "？",
    "发货了吗",
    "退款",
    "地址在哪",
    "营业时间",
    "优惠券",
    "怎么使用",
    "今天有活动吗",
    "已转发",
    "好文章",
    "支持",
    "订阅",
    "菜单",
    "hello",
    "hi",
    "thanks",
    "ok",
    "help",
    "how much?",
    "where is the store?",
    "👍",
)
_LINKS: tuple[tuple[str, str], ...] = (
    ("看看这篇", "https://mp.weixin.qq.com/s/Xk3b8Qe1Rz"),
    ("活动链接", "https://mp.weixin.qq.com/s/9TqL2mVw0a"),
    ("分享一个网页", "https://example.com/article/42"),
    ("Product page", "https://example.com/p/1001"),
)
_PLACES: tuple[tuple[str, str, str], ...] = (
    ("23.134521", "113.358803", "广州市天河区"),
    ("31.230416", "121.473701", "上海市黄浦区"),
    ("39.908823", "116.397470", "北京市东城区"),
    ("22.543096", "114.057865", "深圳市福田区"),
    ("30.274085", "120.155070", "杭州市西湖区"),
)
_VOICE_FORMATS: tuple[str, ...] = ("amr", "amr", "amr", "speex")

_MIX = 0x9E3779B97F4A7C15  # odd, so multiplying by it modulo 2⁶⁴ is invertible
_U64 = (1 << 64) - 1

_OPEN = 1 << 62
"""Stands for "no end inside the window" in a timestamp span."""


# --------------------------------------------------------------------------- population


@dataclass(frozen=True, slots=True)
class _Population:
    """Who the users are and when each of them follows the account.

    Times here are in *window days* (0.0 = local midnight of the first day, ``days`` =
    local midnight after the last one) so the population does not depend on the time zone
    or the calendar, only on ``(appid, users, days, seed)`` — which is what lets
    :func:`initial_followers` reproduce it without the other arguments.
    """

    openids: list[str]
    weights: list[float]
    alias_prob: array[float]
    alias: array[int]
    """Walker/Vose alias table over ``weights``: an O(1) weighted draw per message, where
    bisecting cumulative weights costs a cache miss per step with a million users."""
    initial: bytearray
    """1 for users who follow at the start of the window (the imported follower list)."""
    spans: dict[int, list[tuple[float, float]]]
    """Subscribed ``[start, end)`` spans for users with follow events inside the window;
    ``start < 0`` is "before the window", ``end = inf`` "after it". Users absent here
    follow throughout."""
    msgid_tag: int


def _rng(*parts: object) -> random.Random:
    """An independent, reproducible stream for one purpose (string seeds hash with SHA-512)."""
    return random.Random(":".join(["msgcube-traffic", *map(str, parts)]))


def _openids(appid: str, users: int, rng: random.Random) -> list[str]:
    """Unique 28-character openids that look like WeChat's.

    Real openids start with ``o`` and a few characters shared by all followers of one
    account, then look random; we do the same, taking the shared part from the appid.
    Encoding one big block of random bytes is much faster than building strings per user.
    """
    prefix = "o" + base64.urlsafe_b64encode(hashlib.sha256(appid.encode()).digest())[:5].decode()
    blob = base64.urlsafe_b64encode(rng.randbytes(18 * users)).decode()
    ids = [prefix + blob[i : i + 22] for i in range(0, 24 * users, 24)]
    seen: set[str] = set()
    for i, openid in enumerate(ids):
        while openid in seen:  # 132 random bits: practically never, but uniqueness is a must
            openid = prefix + base64.urlsafe_b64encode(rng.randbytes(18)).decode()[:22]
        seen.add(openid)
        ids[i] = openid
    return ids


def _alias_table(weights: list[float]) -> tuple[list[float], list[int]]:
    """Vose's alias method: draw ``i = int(x)`` for ``x`` uniform in ``[0, n)``, keep ``i``
    when ``x - i < prob[i]``, else take ``alias[i]``."""
    n = len(weights)
    scale = n / sum(weights)
    prob = [w * scale for w in weights]
    alias = list(range(n))
    small = [i for i, p in enumerate(prob) if p < 1.0]
    large = [i for i, p in enumerate(prob) if p >= 1.0]
    while small and large:
        lo, hi = small.pop(), large[-1]
        alias[lo] = hi
        prob[hi] -= 1.0 - prob[lo]
        if prob[hi] < 1.0:
            large.pop()
            small.append(hi)
    for i in itertools.chain(small, large):  # leftovers are 1 up to rounding
        prob[i] = 1.0
    return prob, alias


def _spans_from(
    rng: random.Random, start: float, end: float, days: int
) -> list[tuple[float, float]]:
    """The subscribed spans of a user who follows from ``start`` and leaves at ``end``
    (``end >= days``: stays to the end), then maybe returns, maybe leaves again."""
    own: list[tuple[float, float]] = []
    while True:
        if end >= days:
            own.append((start, math.inf))
            return own
        own.append((start, end))
        if rng.random() >= RESUBSCRIBE_P:
            return own
        start = end + MIN_GAP_DAYS + rng.expovariate(1.0 / RESUBSCRIBE_MEAN_DAYS)
        if start >= days:
            return own
        end = start + MIN_GAP_DAYS + rng.expovariate(1.0 / CHURN_MEAN_DAYS)


def _build_population(appid: str, users: int, days: int, seed: int) -> _Population:
    """Draw the population; user numbers are activity ranks (0 = the chattiest).

    Ranking keeps the users who send most of the messages together in memory, which
    matters for speed with a million users. Most users never follow or unfollow inside
    the window, so one uniform draw per user picks out the few who do (joiners and
    leavers); only those get the detailed, slower treatment.
    """
    rng = _rng("population", appid, seed)
    gauss, rand, exp = rng.gauss, rng.random, math.exp
    weights = sorted(
        [exp(ACTIVITY_SIGMA * min(gauss(), ACTIVITY_CLIP)) for _ in range(users)], reverse=True
    )
    openids = _openids(appid, users, rng)
    join_fraction = min(MAX_JOIN_FRACTION, JOIN_FRACTION_PER_DAY * days)
    p_leave = 1.0 - exp(-(days - MIN_GAP_DAYS) / CHURN_MEAN_DAYS)  # established follower
    p_moves = join_fraction + (1.0 - join_fraction) * p_leave
    movers = [user for user in range(users) if rand() < p_moves]
    initial = bytearray(b"\x01") * users
    spans: dict[int, list[tuple[float, float]]] = {}
    for user in movers:
        if rand() * p_moves < join_fraction:
            initial[user] = 0
            start = rand() * days
            quick = rand() < QUICK_CHURN_P
            stay = rng.expovariate(1.0 / (QUICK_CHURN_MEAN_DAYS if quick else CHURN_MEAN_DAYS))
            spans[user] = _spans_from(rng, start, start + MIN_GAP_DAYS + stay, days)
        else:  # leaves inside the window: an exponential stay conditioned on that
            stay = -CHURN_MEAN_DAYS * math.log(1.0 - rand() * p_leave)
            spans[user] = _spans_from(rng, -1.0, MIN_GAP_DAYS + stay, days)
    prob, alias = _alias_table(weights)
    return _Population(
        openids=openids,
        weights=weights,
        alias_prob=array("d", prob),
        alias=array("i", alias),
        initial=initial,
        spans=spans,
        msgid_tag=rng.getrandbits(11) << 20,
    )


def _check_args(users: int, days: int) -> None:
    if users < 1:
        raise ValueError(f"users must be at least 1, not {users}")
    if users > _MAX_USERS:
        raise ValueError(f"users must be at most {_MAX_USERS}, not {users}")
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")


def initial_followers(*, appid: str, users: int, days: int, seed: int = 0) -> list[str]:
    """The openids that follow the account when the generated window begins.

    Pass the same ``appid``, ``users``, ``days`` and ``seed`` as to
    :func:`generate_traffic`. The contract counts a user as a follower when their latest
    subscribe/unsubscribe event says so, or — with no such event — when they are in the
    imported follower list. The generated traffic has no subscribe event for these users
    (they followed before the first day), so importing this list (``msgcube followers
    import``) is what makes them followers; from then on their unsubscribe (and possible
    re-subscribe) events keep the status current. Everyone else in the population enters
    through a ``subscribe`` event inside the window and sends nothing before it.

    ``end``, ``tz``, ``original_id`` and ``messages_per_day`` do not change who follows.
    The list is sorted by openid because the population is numbered by activity rank and
    its order would otherwise give the chattiest users away.
    """
    _check_args(users, days)
    pop = _build_population(appid, users, days, seed)
    return sorted(openid for openid, flag in zip(pop.openids, pop.initial, strict=True) if flag)


# --------------------------------------------------------------------------- the calendar


def _day_starts(first: date, days: int, tz: str) -> list[int]:
    """Unix time of local midnight of each day and of the day after the last (``days + 1``)."""
    zi = zone(tz)
    return [
        int(datetime.combine(first + timedelta(days=i), time(0), tzinfo=zi).timestamp())
        for i in range(days + 1)
    ]


def _to_ts(x: float, starts: Sequence[int], days: int) -> int:
    """A window-day position as Unix seconds (days may be 23 or 25 hours long with DST)."""
    if x < 0:
        return -1
    if x >= days:
        return _OPEN
    d = int(x)
    return starts[d] + int((x - d) * (starts[d + 1] - starts[d]))


@dataclass(frozen=True, slots=True)
class _Slots:
    """A local day cut into hour slots (offsets from its midnight), with cumulative
    profile weights for bisection."""

    offsets: list[int]
    lengths: list[int]
    cum: list[float]


def _slots(begin: int, end: int, weekend: bool, tz: str) -> _Slots:
    """Hour slots of ``[begin, end)``, each weighted by the profile at its local hour.

    Slots are taken in elapsed time, so a 23- or 25-hour DST day still gets every
    second covered exactly once and nothing falls outside the local day.
    """
    profile = WEEKEND_PROFILE if weekend else WEEKDAY_PROFILE
    zi = zone(tz)
    offsets = list(range(0, end - begin, 3600))
    lengths = [min(3600, end - begin - off) for off in offsets]
    weights = [
        profile[datetime.fromtimestamp(begin + off, zi).hour] * n / 3600
        for off, n in zip(offsets, lengths, strict=True)
    ]
    return _Slots(offsets, lengths, list(itertools.accumulate(weights)))


def _daily_totals(
    pop: _Population, first: date, days: int, per_day: int, appid: str, seed: int
) -> list[int]:
    """Messages per day: activity of the followers that day × weekend × noise × spikes.

    The factors are normalised and rounded cumulatively, so the totals add up to exactly
    ``per_day * days`` — ``messages_per_day`` is then the true mean, not just roughly.
    """
    diff = [0.0] * (days + 1)
    for user, weight in enumerate(pop.weights):
        own = pop.spans.get(user)
        if own is None:
            diff[0] += weight
            continue
        for start, end in own:
            d0 = int(start) if start >= 0 else 0
            d1 = days - 1 if end == math.inf else int(end)
            diff[d0] += weight
            diff[d1 + 1] -= weight
    rng = _rng("volume", appid, seed)
    factors: list[float] = []
    active = 0.0
    for i in range(days):
        active += diff[i]
        factor = max(active, 0.0)
        if (first + timedelta(days=i)).weekday() >= 5:
            factor *= WEEKEND_FACTOR
        factor *= rng.lognormvariate(0.0, DAY_NOISE_SIGMA)
        if rng.random() < SPIKE_P:
            factor *= rng.uniform(1.6, 2.5)
        factors.append(factor)
    total_factor = sum(factors)
    if total_factor <= 0:
        return [0] * days
    scale = per_day * days / total_factor
    totals: list[int] = []
    running, done = 0.0, 0
    for factor in factors:
        running += factor * scale
        target = round(running)
        totals.append(target - done)
        done = target
    return totals


# A day's records are sorted as floats ``offset·2³⁴ + user·2⁴ + code``: exact below 2⁵³,
# and CPython sorts a list of floats about three times faster than a list of tuples.
_T_SHIFT = 34
_T_SCALE = float(1 << _T_SHIFT)
_USER_SHIFT = 4
_USER_MASK = (1 << (_T_SHIFT - _USER_SHIFT)) - 1
_MAX_USERS = _USER_MASK + 1
_CODE_MASK = (1 << _USER_SHIFT) - 1
_SUBSCRIBE, _UNSUBSCRIBE, _FIRST_MSG_CODE = 0, 1, 2
"""Codes: events sort before messages of the same second; a message's code is 2 + type."""


def _follow_events(
    pop: _Population, starts: Sequence[int], days: int
) -> tuple[list[list[float]], dict[int, list[tuple[int, int]]]]:
    """Follow-event sort keys bucketed by day, and each mover's spans in Unix seconds."""
    by_day: list[list[float]] = [[] for _ in range(days)]
    ts_spans: dict[int, list[tuple[int, int]]] = {}
    for user, own in pop.spans.items():
        ts_spans[user] = [(_to_ts(s, starts, days), _to_ts(e, starts, days)) for s, e in own]
        tail = user << _USER_SHIFT
        for (start, end), (ts_start, ts_end) in zip(own, ts_spans[user], strict=True):
            if start >= 0:
                d = int(start)
                by_day[d].append((ts_start - starts[d]) * _T_SCALE + (tail | _SUBSCRIBE))
            if end < days:
                d = int(end)
                by_day[d].append((ts_end - starts[d]) * _T_SCALE + (tail | _UNSUBSCRIBE))
    return by_day, ts_spans


def _covered(spans: list[tuple[int, int]], first: int, last: int) -> bool:
    """True when one subscribed span contains every second from ``first`` to ``last``."""
    return any(s <= first and last < e for s, e in spans)


# --------------------------------------------------------------------------- one day


def _day_keys(
    rng: random.Random,
    pop: _Population,
    status: bytearray,
    ts_spans: dict[int, list[tuple[int, int]]],
    begin: int,
    slots: _Slots,
    count: int,
) -> list[float]:
    """Sort keys of ``count`` messages of the day starting at Unix time ``begin``, unsorted.

    ``status[user]`` is 0 (not subscribed at any time today), 1 (subscribed all day) or
    2 (follow events today: check the exact spans). A draw that lands on a user who is
    not subscribed at that moment is simply redrawn, which keeps the sampling table
    static instead of rebuilding it every day.
    """
    keys: list[float] = []
    append = keys.append
    rnd = rng.random
    prob, alias, n_users = pop.alias_prob, pop.alias, float(len(pop.alias))
    slot_cum, slot_total = slots.cum, slots.cum[-1]
    slot_offsets, slot_lengths = slots.offsets, slots.lengths
    last_second = slot_offsets[-1] + slot_lengths[-1] - 1
    table = _TYPE_TABLE
    scale = _T_SCALE
    need = count
    rejects, max_rejects = 0, 1000 + 50 * count
    while need > 0:
        x = rnd() * n_users
        user = int(x)
        if x - user >= prob[user]:
            user = alias[user]
        state = status[user]
        if state == 0:
            rejects += 1
            if rejects > max_rejects:  # nobody (or almost nobody) can write today
                break
            continue
        k = bisect_right(slot_cum, rnd() * slot_total)
        off = slot_offsets[k] + int(rnd() * slot_lengths[k])
        tail = (user << _USER_SHIFT) + _FIRST_MSG_CODE
        if need == 1 or rnd() >= SESSION_CONTINUE:  # the common single-message session
            if state == 2 and not _covered(ts_spans[user], begin + off, begin + off):
                rejects += 1
                continue
            append(off * scale + (tail + table[int(rnd() * _TYPE_TABLE_SIZE)]))
            need -= 1
            continue
        n = 2
        while n < need and rnd() < SESSION_CONTINUE:
            n += 1
        offs = [off]
        for _ in range(n - 1):
            off = min(off + 3 + int(rnd() * 90), last_second)
            offs.append(off)
        if state == 2 and not _covered(ts_spans[user], begin + offs[0], begin + off):
            rejects += 1
            continue
        kind = table[int(rnd() * _TYPE_TABLE_SIZE)]
        for off in offs:
            append(off * scale + (tail + kind))
            if rnd() >= SESSION_SAME_TYPE:
                kind = table[int(rnd() * _TYPE_TABLE_SIZE)]
        need -= n
    return keys


def _records(
    rng: random.Random,
    keys: list[float],
    begin: int,
    openids: list[str],
    to_user: str,
    msgid_tag: int,
) -> list[PushRecord]:
    """Sorted keys of one day as push dicts, in WeChat's field order.

    ``MsgId`` is ``CreateTime << 31 | tag << 20 | n`` with n the message's index within its
    second: unique across the output, increasing with time like WeChat's, and different
    between seeds (the 11-bit tag) so two generated data sets rarely collide on import.
    """
    rnd = rng.random
    texts, n_texts = _TEXTS, len(_TEXTS)
    type_names = _TYPE_NAMES
    out: list[PushRecord] = []
    append = out.append
    last_t, seq = -1, 0
    for key in keys:
        packed = int(key)
        t = begin + (packed >> _T_SHIFT)
        code = packed & _CODE_MASK
        openid = openids[(packed >> _USER_SHIFT) & _USER_MASK]
        if code < _FIRST_MSG_CODE:
            append(
                {
                    "ToUserName": to_user,
                    "FromUserName": openid,
                    "CreateTime": t,
                    "MsgType": "event",
                    "Event": "subscribe" if code == _SUBSCRIBE else "unsubscribe",
                }
            )
            continue
        if t == last_t:
            seq += 1
        else:
            last_t, seq = t, 0
        msg_id = (t << 31) | msgid_tag | seq
        kind = code - _FIRST_MSG_CODE
        if kind == _TEXT:
            append(
                {
                    "ToUserName": to_user,
                    "FromUserName": openid,
                    "CreateTime": t,
                    "MsgType": "text",
                    "Content": texts[int(rnd() * n_texts)],
                    "MsgId": msg_id,
                }
            )
            continue
        rec: PushRecord = {
            "ToUserName": to_user,
            "FromUserName": openid,
            "CreateTime": t,
            "MsgType": type_names[kind],
        }
        media = f"{(msg_id * _MIX) & _U64:016x}"  # a bijection: unique, random-looking
        if kind == _IMAGE:
            rec["PicUrl"] = f"http://mmbiz.qpic.cn/mmbiz_jpg/{media}/0"
            rec["MediaId"] = media
        elif kind == _VOICE:
            rec["MediaId"] = media
            rec["Format"] = _VOICE_FORMATS[int(rnd() * len(_VOICE_FORMATS))]
        elif kind in (_VIDEO, _SHORTVIDEO):
            rec["MediaId"] = media
            rec["ThumbMediaId"] = f"{(~msg_id * _MIX) & _U64:016x}"
        elif kind == _LINK:
            title, url = _LINKS[int(rnd() * len(_LINKS))]
            rec["Title"] = title
            rec["Url"] = url
        else:
            lat, lng, label = _PLACES[int(rnd() * len(_PLACES))]
            rec["Location_X"] = lat
            rec["Location_Y"] = lng
            rec["Scale"] = 15
            rec["Label"] = label
        rec["MsgId"] = msg_id
        append(rec)
    return out


# --------------------------------------------------------------------------- public entry


def generate_traffic(
    *,
    appid: str,
    original_id: str,
    days: int,
    users: int,
    seed: int = 0,
    end: date,
    tz: str = DEFAULT_TZ,
    messages_per_day: int | None = None,
) -> Iterator[PushRecord]:
    """Push records for the ``days`` local days ending on ``end`` (inclusive), in zone ``tz``.

    Yields message records (``ToUserName`` = ``original_id``, ``FromUserName``,
    ``CreateTime``, ``MsgType``, type-specific fields, ``MsgId``) and follow events
    (``MsgType`` ``event``, ``Event`` ``subscribe``/``unsubscribe``, no ``MsgId``) in
    non-decreasing ``CreateTime`` order. ``messages_per_day`` is the mean number of
    messages (all types, events excluded) per day; by default
    ``DEFAULT_MESSAGES_PER_USER_DAY × users``. Users who followed before the first day
    are :func:`initial_followers`.

    Lazy a day at a time: memory holds one day's records, not the whole output.
    Raises ``ValueError`` for ``days``/``users`` out of range or a negative volume, and
    ``KeyError`` for an unknown time zone — at the call, not at the first record.
    """
    _check_args(users, days)
    if messages_per_day is not None and messages_per_day < 0:
        raise ValueError(f"messages_per_day must not be negative, not {messages_per_day}")
    zone(tz)
    if isinstance(end, datetime):
        end = end.date()
    per_day = (
        round(DEFAULT_MESSAGES_PER_USER_DAY * users)
        if messages_per_day is None
        else messages_per_day
    )
    # chain() hands out each day's prebuilt list from C: no generator frame per record.
    return itertools.chain.from_iterable(
        _days(appid, original_id, days, users, seed, end, tz, per_day)
    )


def _days(
    appid: str,
    original_id: str,
    days: int,
    users: int,
    seed: int,
    end: date,
    tz: str,
    per_day: int,
) -> Iterator[list[PushRecord]]:
    """The records of each day in turn, each list sorted by ``CreateTime``."""
    first = end - timedelta(days=days - 1)
    pop = _build_population(appid, users, days, seed)
    starts = _day_starts(first, days, tz)
    totals = _daily_totals(pop, first, days, per_day, appid, seed)
    events_by_day, ts_spans = _follow_events(pop, starts, days)
    status = bytearray(pop.initial)
    for i in range(days):
        day = first + timedelta(days=i)
        begin, stop = starts[i], starts[i + 1]
        events = events_by_day[i]
        movers = [(int(key) >> _USER_SHIFT) & _USER_MASK for key in events]
        for user in movers:
            status[user] = 2
        rng = _rng("day", appid, seed, day.isoformat())
        slots = _slots(begin, stop, day.weekday() >= 5, tz)
        keys = _day_keys(rng, pop, status, ts_spans, begin, slots, totals[i])
        keys.extend(events)
        keys.sort()
        yield _records(rng, keys, begin, pop.openids, original_id, pop.msgid_tag)
        for user in movers:
            status[user] = any(s <= stop < e for s, e in ts_spans[user])
