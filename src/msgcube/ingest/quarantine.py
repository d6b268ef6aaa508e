"""Replaying quarantined pushes once their cause is fixed (``msgcube quarantine replay``).

A quarantined push is the raw body plus the raw query string of a request whose
signature was valid but whose content could not be stored — most often because the
account's EncodingAESKey was wrong or had just been rotated. Replay runs each one through
``open_push`` again, with the account as it is *now*: both signatures are re-checked
(a quarantine row is not a licence to skip them), then decryption, parsing and
``parse_record``. What now opens is stored with ``write_batch`` — deduplicated like any
push, so replaying a push WeChat has meanwhile retried successfully counts it once — and
marked ``replayed_at`` in the same transaction; what still fails keeps its row, with the
new reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from msgcube.domain.messages import Record
from msgcube.domain.periods import local_today
from msgcube.errors import BadSignature, IngestError
from msgcube.ingest.batch import write_batch
from msgcube.ingest.gate import RawPush, open_push
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.db import Store
from msgcube.storage.quarantine import get_entries, mark_replayed, pending_ids, set_reason
from msgcube.storage.records import WriteResult

_CHUNK = 500


@dataclass(slots=True)
class ReplayReport:
    """What a replay did: stored (new or duplicate) entries, and why the others failed."""

    replayed: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    written: WriteResult = field(default_factory=WriteResult)


def replay_quarantine(
    store: Store,
    now: datetime,
    ids: Sequence[int] | None = None,
    *,
    appid: str | None = None,
) -> ReplayReport:
    """Replay the given entries, or every entry not yet replayed (of ``appid`` if given)."""
    report = ReplayReport()
    if ids is None:
        with store.read() as conn:
            ids = pending_ids(conn, appid)
    for i in range(0, len(ids), _CHUNK):
        _replay_chunk(store, now, ids[i : i + _CHUNK], report)
    return report


def _replay_chunk(store: Store, now: datetime, ids: Sequence[int], report: ReplayReport) -> None:
    with store.write() as conn:
        accounts: dict[str, Account | None] = {}
        opened: dict[str, list[tuple[int, Record]]] = {}
        for entry in get_entries(conn, ids):
            if entry.replayed_at is not None:
                report.already.append(entry.id)
                continue
            if entry.appid not in accounts:
                accounts[entry.appid] = get_account(conn, entry.appid)
            account = accounts[entry.appid]
            try:
                if account is None:
                    raise IngestError(f"unknown appid {entry.appid!r}")
                raw = RawPush(entry.appid, entry.query, entry.body)
                record = open_push(account, raw).record
            except BadSignature as exc:
                reason = f"{exc.reason} with the account's current token"
            except IngestError as exc:
                reason = exc.reason
            else:
                opened.setdefault(entry.appid, []).append((entry.id, record))
                continue
            set_reason(conn, entry.id, reason)
            report.failed.append((entry.id, reason))
        stamp = int(now.timestamp())
        for appid, items in opened.items():
            account = accounts[appid]
            assert account is not None
            records = [record for _, record in items]
            today = local_today(now, account.tz)
            report.written.add(write_batch(conn, account, records, today, received_at=stamp))
            for entry_id, _ in items:
                mark_replayed(conn, entry_id, stamp)
                report.replayed.append(entry_id)
