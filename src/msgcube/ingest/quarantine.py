"""Replaying quarantined pushes once their cause is fixed (``msgcube quarantine replay``).

A quarantined push is the raw body plus the raw query string of a request whose
signature was valid but whose content could not be stored — most often because the
account's EncodingAESKey was wrong or had just been rotated. Replay runs each one through
the gate again, with the account as it is *now* (or, for a push a platform's message URL
received, with the platform's Token and keys): both signatures are re-checked
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

from sqlalchemy import Connection

from msgcube.auth.platforms import admitted_account, create_platform_account
from msgcube.domain.messages import Record
from msgcube.domain.periods import DEFAULT_TZ, local_today
from msgcube.errors import BadSignature, IngestError, PushRefused
from msgcube.ingest.batch import write_batch
from msgcube.ingest.gate import RawPush, check_request_signature, open_push
from msgcube.ingest.platform_push import open_platform_fields, platform_gate, read_platform_push
from msgcube.storage.accounts import Account, get_account
from msgcube.storage.db import Store
from msgcube.storage.platforms import Platform, get_platform
from msgcube.storage.quarantine import (
    QuarantineEntry,
    get_entries,
    mark_replayed,
    pending_ids,
    set_reason,
)
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
    tz: str = DEFAULT_TZ,
) -> ReplayReport:
    """Replay the given entries, or every entry not yet replayed (of ``appid`` if given).

    ``tz``: the zone of an account a platform's replayed push creates (``Settings.tz``,
    as the platform's message URL would have).
    """
    report = ReplayReport()
    if ids is None:
        with store.read() as conn:
            ids = pending_ids(conn, appid)
    for i in range(0, len(ids), _CHUNK):
        _replay_chunk(store, now, tz, ids[i : i + _CHUNK], report)
    return report


class _Opener:
    """Opens entries as the URL that received them would: an account's own URL with the
    account's Token and keys as they are now, a platform's with the platform's (creating
    the account if its first push is the one replayed). Lookups are kept for one chunk."""

    def __init__(self, conn: Connection, tz: str, now: int) -> None:
        self.conn, self.tz, self.now = conn, tz, now
        self._accounts: dict[str, Account | None] = {}
        self._platforms: dict[str, Platform | None] = {}

    def open(self, entry: QuarantineEntry) -> tuple[Account, Record] | None:
        """The account and record of ``entry``; ``None`` for WeChat's own notice to a
        platform (nothing to store). ``BadSignature``, ``IngestError`` or ``PushRefused``
        when it still does not open."""
        raw = RawPush(entry.appid, entry.query, entry.body)
        if not entry.component_appid:
            account = self._account(entry.appid)
            if account is None:
                raise IngestError(f"unknown appid {entry.appid!r}")
            return account, open_push(account, raw).record
        cid = entry.component_appid
        if cid not in self._platforms:
            self._platforms[cid] = get_platform(self.conn, cid)
        platform = self._platforms[cid]
        if platform is None:
            raise IngestError(f"unknown platform {cid!r}")
        check_request_signature(platform_gate(platform), raw.query)
        push = read_platform_push(platform, open_platform_fields(platform, raw), raw.body)
        if push.record is None:
            return None
        found = admitted_account(self.conn, platform, entry.appid, push.to_user)
        if found is None:
            found = create_platform_account(
                self.conn, platform, entry.appid, push.to_user, self.tz, self.now
            )
        return found, push.record

    def _account(self, appid: str) -> Account | None:
        if appid not in self._accounts:
            self._accounts[appid] = get_account(self.conn, appid)
        return self._accounts[appid]


def _replay_chunk(
    store: Store, now: datetime, tz: str, ids: Sequence[int], report: ReplayReport
) -> None:
    stamp = int(now.timestamp())
    with store.write() as conn:
        opener = _Opener(conn, tz, stamp)
        opened: dict[int, tuple[Account, list[tuple[int, Record]]]] = {}
        for entry in get_entries(conn, ids):
            if entry.replayed_at is not None:
                report.already.append(entry.id)
                continue
            try:
                found = opener.open(entry)
            except BadSignature as exc:
                whose = "platform" if entry.component_appid else "account"
                reason = f"{exc.reason} with the {whose}'s current token"
            except (IngestError, PushRefused) as exc:
                reason = exc.reason
            else:
                if found is None:  # a platform notice: nothing to store, nothing pending
                    mark_replayed(conn, entry.id, stamp)
                    report.replayed.append(entry.id)
                else:
                    account, record = found
                    opened.setdefault(account.id, (account, []))[1].append((entry.id, record))
                continue
            set_reason(conn, entry.id, reason)
            report.failed.append((entry.id, reason))
        for account, items in opened.values():
            records = [record for _, record in items]
            today = local_today(now, account.tz)
            report.written.add(write_batch(conn, account, records, today, received_at=stamp))
            for entry_id, _ in items:
                mark_replayed(conn, entry_id, stamp)
                report.replayed.append(entry_id)
