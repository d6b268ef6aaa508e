"""WeChat's side of a callback in plain mode: signed pushes, sent until acknowledged.

Plain mode only (the signature in the query, the XML as is): the ClickHouse tests prove
where pushes are stored and what is acknowledged, not the AES envelope, which
tests/test_callback.py covers. WeChat retries a push that did not get ``success``
(three tries in about 15 s); :meth:`Pusher.until_acked` retries for longer, as a patient
WeChat, so that a test can end with every push acknowledged and check what was stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

ACK = "success"


def xml_of(record: Mapping[str, object]) -> bytes:
    """A push as WeChat writes it: strings in CDATA, numbers bare."""
    parts = []
    for name, value in record.items():
        text = str(value) if isinstance(value, int) else f"<![CDATA[{value}]]>"
        parts.append(f"<{name}>{text}</{name}>")
    return ("<xml>" + "".join(parts) + "</xml>").encode()


def signed_query(token: str) -> dict[str, str]:
    """``signature``/``timestamp``/``nonce``: SHA-1 of the sorted token, timestamp and nonce."""
    timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
    joined = "".join(sorted([token, timestamp, nonce]))
    return {
        "signature": hashlib.sha1(joined.encode()).hexdigest(),
        "timestamp": timestamp,
        "nonce": nonce,
    }


@dataclass
class Pusher:
    """Pushes to one account's callback URL; remembers what was acknowledged and refused."""

    base_url: str
    appid: str
    token: str
    outcomes: list[str] = field(default_factory=list)
    """Every answer in order: ``success``, ``HTTP <status>``, or the transport error's name."""

    @property
    def url(self) -> str:
        return f"{self.base_url}/wechat/callback/{self.appid}"

    async def once(self, client: httpx.AsyncClient, record: Mapping[str, object]) -> str:
        """Send RECORD once; ``success`` when acknowledged, else what happened instead."""
        try:
            answer = await client.post(
                self.url, params=signed_query(self.token), content=xml_of(record)
            )
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        else:
            acked = answer.status_code == 200 and answer.text == ACK
            outcome = ACK if acked else f"HTTP {answer.status_code}"
        self.outcomes.append(outcome)
        return outcome

    async def until_acked(
        self,
        client: httpx.AsyncClient,
        record: Mapping[str, object],
        *,
        timeout: float = 180.0,
        pause: float = 0.2,
    ) -> int:
        """Send RECORD until acknowledged; the number of tries. AssertionError past TIMEOUT."""
        deadline = time.monotonic() + timeout
        tries = 0
        while True:
            tries += 1
            outcome = await self.once(client, record)
            if outcome == ACK:
                return tries
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.appid}: not acknowledged after {tries} tries: {outcome}"
                )
            await asyncio.sleep(pause)
