"""Speed checks of pure code, moved out of the unit tests (a test must not fail on a busy machine).

* the traffic generator's rate (the benchmarks ask it for millions of records; goal
  > 75,000 records/s) and how fast a ten-year generator yields its first records
  (lazy: goal < 5 s);
* how fast the push parser refuses a billion-laughs document (it must refuse the DTD,
  never expand it: goal < 3 s; expanded, the entity would be 1 GB of text).

    python bench/speed.py        # prints each measurement and whether its goal is met

Exit status 1 when a goal is missed. Nothing is recorded in RESULTS.md: these are
guards, not results to compare.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable
from datetime import date
from typing import TypeVar

from msgcube.domain.traffic import PushRecord, generate_traffic
from msgcube.errors import MsgcubeError
from msgcube.wechat.xml import parse_push_xml

APPID, ORIGINAL_ID, END = "wxd0c1e2f3a4b5c6d7", "gh_0123456789ab", date(2024, 3, 31)
T = TypeVar("T")


def nested_entities(depth: int = 9, fanout: int = 10) -> bytes:
    """A billion-laughs document: ``depth`` entities, each ``fanout`` copies of the last."""
    names = [f"e{level}" for level in range(depth)]
    declarations = [f'<!ENTITY {names[0]} "lol">'] + [
        f'<!ENTITY {name} "{("&" + below + ";") * fanout}">'
        for below, name in itertools.pairwise(names)
    ]
    return (
        f'<?xml version="1.0"?><!DOCTYPE xml [{"".join(declarations)}]><xml>'
        f"<ToUserName>gh</ToUserName><FromUserName>&{names[-1]};</FromUserName>"
        "<CreateTime>1771900000</CreateTime><MsgType>text</MsgType><MsgId>7</MsgId></xml>"
    ).encode()


BILLION_LAUGHS = nested_entities()


def timed(func: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = func()
    return result, time.perf_counter() - started


def generation_rate() -> tuple[str, bool]:
    records = generate_traffic(
        appid=APPID,
        original_id=ORIGINAL_ID,
        seed=7,
        users=20_000,
        messages_per_day=50_000,
        days=6,
        end=END,
    )
    n, seconds = timed(lambda: sum(1 for _ in records))
    rate = n / seconds
    return (
        f"traffic: {n:,} records in {seconds:.2f}s = {rate:,.0f}/s (goal > 75,000)",
        rate > 75_000,
    )


def lazy_start() -> tuple[str, bool]:
    def first() -> list[PushRecord]:
        records = generate_traffic(
            appid=APPID, original_id=ORIGINAL_ID, seed=7, users=1000, days=3650, end=END
        )
        return list(itertools.islice(records, 5))

    _, seconds = timed(first)
    return f"traffic: first 5 of ten years in {seconds:.2f}s (goal < 5 s)", seconds < 5


def billion_laughs() -> tuple[str, bool]:
    def parse() -> str:
        try:
            parse_push_xml(BILLION_LAUGHS)
        except (MsgcubeError, ValueError) as exc:
            return f"refused ({exc})"
        return "ACCEPTED"

    verdict, seconds = timed(parse)
    ok = seconds < 3 and str(verdict).startswith("refused")
    return f"xml: billion laughs {verdict} in {seconds * 1000:.1f} ms (goal < 3 s)", ok


def main() -> int:
    failed = 0
    for check in (generation_rate, lazy_start, billion_laughs):
        line, ok = check()
        print(("ok    " if ok else "MISSED ") + line, flush=True)
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
