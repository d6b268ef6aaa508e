"""The synthetic traffic generator: reproducible, well-formed, and realistic enough that the
statistics computed from it look like a real official account's (``msgcube generate``).
"""

from __future__ import annotations

import itertools
import json
import re
import tracemalloc
from collections import Counter, defaultdict
from datetime import date, timedelta
from typing import Any

import pytest

from msgcube.domain.messages import parse_record
from msgcube.domain.periods import local_day_hour
from msgcube.domain.traffic import MSG_TYPE_MIX, PushRecord, generate_traffic, initial_followers

END = date(2024, 3, 31)  # a Sunday
DAYS = 56  # eight whole weeks, Monday 2024-02-05 … Sunday 2024-03-31
USERS = 2000
SEED = 7
BASE: dict[str, Any] = {
    "appid": "wxd0c1e2f3a4b5c6d7",
    "original_id": "gh_0123456789ab",
    "days": DAYS,
    "users": USERS,
    "seed": SEED,
    "end": END,
}


def gen(**overrides: Any) -> list[PushRecord]:
    return list(generate_traffic(**{**BASE, **overrides}))


def messages(records: list[PushRecord]) -> list[PushRecord]:
    return [r for r in records if r["MsgType"] != "event"]


@pytest.fixture(scope="module")
def records() -> list[PushRecord]:
    return gen()


@pytest.fixture(scope="module")
def msgs(records: list[PushRecord]) -> list[PushRecord]:
    return messages(records)


# --------------------------------------------------------------------------- reproducibility


def test_same_arguments_give_byte_identical_output(records: list[PushRecord]) -> None:
    again = gen()
    assert again == records
    assert json.dumps(again, ensure_ascii=False) == json.dumps(records, ensure_ascii=False)


def test_different_seed_gives_different_traffic(records: list[PushRecord]) -> None:
    other = gen(seed=SEED + 1)
    assert other != records
    assert {r["FromUserName"] for r in other}.isdisjoint({r["FromUserName"] for r in records})
    assert {r["MsgId"] for r in messages(other)}.isdisjoint({r["MsgId"] for r in messages(records)})


def test_openids_are_per_account() -> None:
    a = {str(r["FromUserName"]) for r in gen(days=3, users=50)}
    b = {str(r["FromUserName"]) for r in gen(days=3, users=50, appid="wx0000000000000001")}
    assert a.isdisjoint(b)
    assert len({o[:6] for o in a}) == 1  # one account, one openid prefix, as on WeChat
    assert len({o[:6] for o in b}) == 1
    assert next(iter(a))[:6] != next(iter(b))[:6]


def test_is_lazy() -> None:
    # Ten years of traffic built eagerly would hold millions of records (gigabytes); lazily
    # the first records cost one day's work. (Its speed is checked in bench/speed.py.)
    tracemalloc.start()
    try:
        it = generate_traffic(**{**BASE, "users": 1000, "days": 3650})
        first = list(itertools.islice(it, 5))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(first) == 5
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB for the first 5 records"


# --------------------------------------------------------------------------- well-formed


def test_records_are_well_formed_pushes(records: list[PushRecord]) -> None:
    openid_re = re.compile(r"o[A-Za-z0-9_-]{27}\Z")
    for r in records:
        assert r["ToUserName"] == BASE["original_id"]
        assert isinstance(r["FromUserName"], str)
        assert openid_re.match(r["FromUserName"])
        assert isinstance(r["CreateTime"], int)
        if r["MsgType"] == "event":
            assert r["Event"] in ("subscribe", "unsubscribe")
            assert "MsgId" not in r
        else:
            assert isinstance(r["MsgId"], int)
            assert 0 < r["MsgId"] < 2**63
        parse_record(r)  # the ingestion gate accepts every generated record


def test_type_specific_fields(msgs: list[PushRecord]) -> None:
    expected = {
        "text": {"Content"},
        "image": {"PicUrl", "MediaId"},
        "voice": {"MediaId", "Format"},
        "video": {"MediaId", "ThumbMediaId"},
        "shortvideo": {"MediaId", "ThumbMediaId"},
        "link": {"Title", "Url"},
        "location": {"Location_X", "Location_Y", "Scale", "Label"},
    }
    common = {"ToUserName", "FromUserName", "CreateTime", "MsgType", "MsgId"}
    seen = set()
    for m in msgs:
        msg_type = str(m["MsgType"])
        assert set(m) == common | expected[msg_type]
        seen.add(msg_type)
    assert seen == set(expected)
    text = next(m for m in msgs if m["MsgType"] == "text")
    assert list(text) == ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId"]


def test_create_time_non_decreasing_and_inside_the_local_days(records: list[PushRecord]) -> None:
    times = [int(r["CreateTime"]) for r in records]
    assert times == sorted(times)
    first = END - timedelta(days=DAYS - 1)
    days = {local_day_hour(t)[0] for t in times}
    assert min(days) == first
    assert max(days) == END
    assert len(days) == DAYS


def test_dst_zone_days_are_respected() -> None:
    # 2024-03-10 is 23 hours long in New York, 2024-11-03 is 25 hours long.
    for end in (date(2024, 3, 12), date(2024, 11, 5)):
        recs = gen(days=5, users=300, end=end, tz="America/New_York")
        times = [int(r["CreateTime"]) for r in recs]
        assert times == sorted(times)
        days = Counter(local_day_hour(t, "America/New_York")[0] for t in times)
        assert set(days) == {end - timedelta(days=i) for i in range(5)}


def test_msgids_unique(records: list[PushRecord]) -> None:
    ids = [r["MsgId"] for r in messages(records)]
    assert len(ids) == len(set(ids))


def test_msgids_unique_at_high_volume() -> None:
    # Many messages share a second here, which is where MsgId could collide.
    recs = messages(gen(days=1, users=5000, messages_per_day=200_000))
    assert len(recs) == 200_000
    assert len({r["MsgId"] for r in recs}) == len(recs)


# --------------------------------------------------------------------------- realism


def test_type_mix(msgs: list[PushRecord]) -> None:
    assert len(msgs) > 50_000
    counts = Counter(str(m["MsgType"]) for m in msgs)
    share = {t: counts[t] / len(msgs) for t in counts}
    assert share["text"] == pytest.approx(0.70, abs=0.02)
    assert share["image"] == pytest.approx(0.12, abs=0.015)
    assert share["voice"] == pytest.approx(0.10, abs=0.015)
    assert share["video"] + share["shortvideo"] == pytest.approx(0.03, abs=0.01)
    assert share["link"] == pytest.approx(0.02, abs=0.008)
    assert share["location"] == pytest.approx(0.03, abs=0.01)
    assert sum(s for _, s in MSG_TYPE_MIX) == pytest.approx(1.0)


def test_nights_are_quiet_and_evenings_busy(msgs: list[PushRecord]) -> None:
    by_hour = Counter(local_day_hour(int(m["CreateTime"]))[1] for m in msgs)
    night = by_hour[3] + by_hour[4] + by_hour[5]
    evening = by_hour[20] + by_hour[21] + by_hour[22]
    assert evening > 5 * night
    assert min(by_hour, key=lambda h: by_hour[h]) in (3, 4, 5)
    assert max(by_hour, key=lambda h: by_hour[h]) in (20, 21, 22)


def test_weekends_differ_from_weekdays(msgs: list[PushRecord]) -> None:
    per_day = Counter(local_day_hour(int(m["CreateTime"]))[0] for m in msgs)
    weekend = [n for d, n in per_day.items() if d.weekday() >= 5]
    weekday = [n for d, n in per_day.items() if d.weekday() < 5]
    assert len(weekend) == 16
    assert len(weekday) == 40
    assert sum(weekend) / len(weekend) > 1.08 * sum(weekday) / len(weekday)
    # and a different shape: weekend nights are later
    late = Counter(
        local_day_hour(int(m["CreateTime"]))[0].weekday() >= 5
        for m in msgs
        if local_day_hour(int(m["CreateTime"]))[1] in (0, 1)
    )
    assert late[True] / sum(weekend) > 1.2 * late[False] / sum(weekday)


def test_daily_volume_varies(msgs: list[PushRecord]) -> None:
    per_day = Counter(local_day_hour(int(m["CreateTime"]))[0] for m in msgs)
    assert max(per_day.values()) > 1.3 * min(per_day.values())


def test_heavy_tail(msgs: list[PushRecord]) -> None:
    per_user = sorted(Counter(m["FromUserName"] for m in msgs).values(), reverse=True)
    top = per_user[: len(per_user) // 10]
    assert sum(top) > 0.4 * sum(per_user)
    assert per_user[0] > 20 * per_user[len(per_user) // 2]


def test_most_followers_send_nothing_on_a_given_day(msgs: list[PushRecord]) -> None:
    senders: defaultdict[date, set[object]] = defaultdict(set)
    for m in msgs:
        senders[local_day_hour(int(m["CreateTime"]))[0]].add(m["FromUserName"])
    assert len(senders) == DAYS
    assert all(len(s) < 0.5 * USERS for s in senders.values())


def test_sessions_repeat_senders_within_minutes(msgs: list[PushRecord]) -> None:
    # Users send bursts: some messages follow the same user's previous one within 2 minutes.
    last: dict[object, int] = {}
    quick = 0
    for m in msgs:
        t = int(m["CreateTime"])
        if t - last.get(m["FromUserName"], -10_000) <= 120:
            quick += 1
        last[m["FromUserName"]] = t
    assert quick > 0.2 * len(msgs)


# --------------------------------------------------------------------------- followers


def test_follow_events_are_consistent(records: list[PushRecord]) -> None:
    """Replay: nobody writes while not following; events alternate per user."""
    followers = set(initial_followers(appid=BASE["appid"], users=USERS, days=DAYS, seed=SEED))
    assert 0.6 * USERS < len(followers) < USERS
    everyone = set(followers)
    unsubscribed: set[str] = set()
    resubscribed = 0
    joiners_writing = 0
    initial = set(followers)
    for r in records:
        who = str(r["FromUserName"])
        everyone.add(who)
        if r["MsgType"] == "event" and r["Event"] == "subscribe":
            assert who not in followers
            followers.add(who)
            resubscribed += who in unsubscribed
        elif r["MsgType"] == "event":
            assert r["Event"] == "unsubscribe"
            assert who in followers
            followers.remove(who)
            unsubscribed.add(who)
        else:
            assert who in followers, f"{who} wrote at {r['CreateTime']} while not following"
            joiners_writing += who not in initial
    assert len(everyone) <= USERS
    events = Counter(str(r["Event"]) for r in records if r["MsgType"] == "event")
    assert events["subscribe"] > 0.05 * USERS  # new followers arrive over time …
    assert events["unsubscribe"] > 0.03 * USERS  # … some leave …
    assert resubscribed > 0  # … and a few come back
    assert joiners_writing > 0  # new followers start writing after subscribing


def test_initial_followers_is_deterministic_and_sorted() -> None:
    kw: dict[str, Any] = {"appid": BASE["appid"], "users": 500, "days": 30, "seed": 3}
    first = initial_followers(**kw)
    assert first == initial_followers(**kw)
    assert first == sorted(first)
    assert len(set(first)) == len(first)
    assert first != initial_followers(**{**kw, "seed": 4})


# --------------------------------------------------------------------------- volume


@pytest.mark.parametrize(("per_day", "days", "users"), [(2000, 20, 500), (300, 45, 3000)])
def test_messages_per_day_is_the_mean(per_day: int, days: int, users: int) -> None:
    msgs = messages(gen(messages_per_day=per_day, days=days, users=users))
    assert len(msgs) / days == pytest.approx(per_day, rel=0.10)


def test_default_volume_follows_users() -> None:
    msgs = messages(gen(days=14, users=1000))
    assert 0.5 * 1000 <= len(msgs) / 14 <= 1.0 * 1000


def test_zero_volume_gives_only_events() -> None:
    recs = gen(messages_per_day=0, days=30, users=300)
    assert recs
    assert all(r["MsgType"] == "event" for r in recs)


def test_tiny_population() -> None:
    recs = gen(users=1, days=3, messages_per_day=10)
    assert len({r["FromUserName"] for r in recs}) == 1


@pytest.mark.parametrize(
    ("kw", "exc"),
    [
        ({"users": 0}, ValueError),
        ({"days": 0}, ValueError),
        ({"messages_per_day": -1}, ValueError),
        ({"tz": "Mars/Olympus_Mons"}, KeyError),
    ],
)
def test_bad_arguments_fail_at_the_call(kw: dict[str, Any], exc: type[Exception]) -> None:
    with pytest.raises(exc):
        generate_traffic(**{**BASE, **kw})
