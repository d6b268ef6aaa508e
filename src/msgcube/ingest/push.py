"""A callback push, from request parts to a committed row: verification and group commit.

Two halves, both free of HTTP so the server and ``msgcube quarantine replay`` share them:

``open_push`` is the gate. It checks ``signature`` (and, in compatible/safe mode,
``msg_signature``) in constant time, opens the AES envelope with the current and then
the previous EncodingAESKey, parses the XML without DTDs or entities, and validates the
record with ``parse_record`` — the same gate the bulk import uses. A wrong signature
raises ``BadSignature`` (403, nothing stored); anything else that fails *after* a valid
signature raises ``IngestError`` (400, quarantined). ``msg_signature`` is checked before
decrypting because the AES-CBC envelope has no integrity of its own.

``GroupCommitter`` makes acknowledged pushes durable without one fsync per push. Each
push enqueues its record with a future; a single writer task takes everything queued,
stores it in one ``store.write()`` transaction on its own thread, then resolves every
future at once — or fails them all, so each is answered 500 and WeChat retries. While
one commit is on disk the next batch accumulates by itself; the writer only lingers a
millisecond before taking it, so that the requests answered by the previous commit can
come back and share the next fsync instead of leaving it to a handful. On SQLite, the
committers of several worker processes take turns through a ``flock`` rather than
SQLite's sleeping busy handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import parse_qsl

from sqlalchemy import Connection, bindparam, select

from msgcube.domain.messages import Message, Record, parse_record
from msgcube.domain.periods import local_today
from msgcube.errors import IngestError, MsgcubeError
from msgcube.ingest.store import store_batch
from msgcube.storage.accounts import Account
from msgcube.storage.db import Store
from msgcube.storage.quarantine import NewEntry, add_entries
from msgcube.storage.records import SenderIds
from msgcube.storage.schema import accounts
from msgcube.wechat import (
    AESKey,
    DecryptError,
    XmlError,
    check_signature,
    decrypt_with_rotation,
    parse_envelope,
    parse_push_xml,
)

log = logging.getLogger("msgcube.push")


class BadSignature(MsgcubeError):
    """The request does not prove knowledge of the account's Token: HTTP 403, stored nowhere."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse_query(query_string: str) -> dict[str, str]:
    """The query parameters, last occurrence winning, blanks kept.

    The server and the quarantine replay both read the stored raw query string through
    this one function, so they can never disagree about which ``nonce`` was signed.
    """
    return dict(parse_qsl(query_string, keep_blank_values=True))


def check_request_signature(account: Account, query: Mapping[str, str]) -> None:
    """The ``signature`` check every callback request (GET or POST) must pass.

    An account without a callback Token refuses everything: with an empty Token anyone
    could compute the signature of any timestamp and nonce.
    """
    token = account.callback_token
    if not token:
        raise BadSignature("the account has no callback token")
    if not check_signature(
        query.get("signature", ""), token, query.get("timestamp", ""), query.get("nonce", "")
    ):
        raise BadSignature("bad signature")


def open_push(account: Account, query: Mapping[str, str], body: bytes) -> Record:
    """Verify and decode one POSTed push into a record.

    ``BadSignature`` when either signature is wrong or missing; ``IngestError`` (its
    ``reason`` says which stage failed) when the signed request cannot be stored.
    """
    check_request_signature(account, query)
    return open_body(account, query, body)


def open_body(account: Account, query: Mapping[str, str], body: bytes) -> Record:
    """The part of ``open_push`` after the ``signature`` check (the server reads the body
    only once that check has passed)."""
    fields = open_fields(account, query, body)
    try:
        return parse_record(fields)
    except IngestError as exc:
        raise IngestError(f"record: {exc.reason}") from None


def open_fields(account: Account, query: Mapping[str, str], body: bytes) -> dict[str, str]:
    """``open_body`` up to the push's XML fields, before they are read as a record (a
    platform's URL also receives WeChat's own notices, which are no record)."""
    encrypt_type = (query.get("encrypt_type") or "raw").strip().lower()
    if encrypt_type == "raw":
        xml = body
    elif encrypt_type == "aes":
        xml = _decrypt(account, query, body)
    else:
        raise IngestError(f"unknown encrypt_type {encrypt_type[:32]!r}")
    try:
        return parse_push_xml(xml)
    except XmlError as exc:
        raise IngestError(f"xml: {exc}") from None


def _decrypt(account: Account, query: Mapping[str, str], body: bytes) -> bytes:
    expected = query.get("msg_signature")
    if not expected:
        raise BadSignature("encrypt_type=aes without msg_signature")
    try:
        _, encrypted = parse_envelope(body)
    except XmlError as exc:
        # Only ``signature`` could be checked; it covers no body, but it does prove the
        # sender knows the Token, so the body is kept rather than dropped.
        raise IngestError(f"envelope: {exc}") from None
    if not encrypted:
        raise IngestError("envelope: no Encrypt field")
    token = account.callback_token
    timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
    if not token or not check_signature(expected, token, timestamp, nonce, encrypted):
        raise BadSignature("bad msg_signature")
    keys = aes_keys(account)
    try:
        xml, _index = decrypt_with_rotation(keys, encrypted, account.appid)
    except DecryptError as exc:
        raise IngestError(f"decrypt: {exc}") from None
    return xml


def aes_keys(account: Account) -> list[AESKey]:
    """The account's EncodingAESKeys, current first; ``IngestError`` when none is usable."""
    texts = [k for k in (account.aes_key, account.prev_aes_key) if k]
    if not texts:
        raise IngestError("decrypt: the account has no EncodingAESKey (msgcube account set)")
    keys: list[AESKey] = []
    for text in texts:
        try:
            keys.append(_aes_key(text))
        except ValueError as exc:
            raise IngestError(f"decrypt: the account's EncodingAESKey is invalid ({exc})") from None
    return keys


@functools.lru_cache(maxsize=256)
def _aes_key(text: str) -> AESKey:
    return AESKey(text)


# --------------------------------------------------------------------------- group commit


@dataclass(slots=True)
class CommitStats:
    """Counters for logs and the benchmark: how well pushes share commits."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed_batches: int = 0


@dataclass(slots=True)
class _Job:
    account: Account | None
    record: Record | None
    entry: NewEntry | None
    future: asyncio.Future[None]


_STOP = object()


class GroupCommitter:
    """One writer per process that turns concurrent pushes into shared transactions.

    ``store`` and ``quarantine`` return once the item is committed, and raise whatever
    the commit raised. ``start`` is optional (the first item starts the writer on the
    running loop); ``stop`` commits what is queued, then ends the writer.
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        max_batch: int = 1024,
        linger: float = 0.001,
    ) -> None:
        self.store_db = store
        self.clock = clock
        self.max_batch = max_batch
        self.linger = linger
        self.stats = CommitStats()
        self._queue: asyncio.Queue[_Job | object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._lock: _FileLock | None = None
        self._senders = _SenderCache()

    def _process_lock(self) -> contextlib.AbstractContextManager[None]:
        """The cross-process commit lock of a SQLite file (created with the first commit)."""
        if self._lock is None:
            database = self.store_db.engine.url.database
            if not self.store_db.is_sqlite or not database or database == ":memory:":
                return contextlib.nullcontext()
            self._lock = _FileLock(database + "-commit-lock")
        return self._lock

    async def start(self) -> None:
        if self._task is not None:
            return
        self._stopping = False
        self._queue = asyncio.Queue()
        # One dedicated thread: commits never wait behind request handlers in the shared
        # pool, and this process never has two of its own commits competing for the lock.
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="msgcube-commit")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit everything already queued, then stop the writer."""
        if self._task is None or self._queue is None:
            return
        self._stopping = True
        self._queue.put_nowait(_STOP)
        try:
            await self._task
        finally:
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    async def store(self, account: Account, record: Record) -> None:
        """Return once ``record`` is committed (or was already stored: a retry)."""
        await self._submit(_Job(account, record, None, self._future()))

    async def quarantine(self, entry: NewEntry) -> None:
        """Return once ``entry`` is committed to the quarantine."""
        await self._submit(_Job(None, None, entry, self._future()))

    @staticmethod
    def _future() -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, job: _Job) -> None:
        if self._stopping:
            raise RuntimeError("the group committer is stopping")
        if self._task is None:
            await self.start()
        assert self._queue is not None
        self._queue.put_nowait(job)
        # If the request is cancelled (client gone) the future is cancelled with it, but
        # the job stays queued and is committed regardless: a retry is then a duplicate.
        await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        assert self._executor is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await queue.get()
            if first is _STOP:
                break
            if self.linger:
                # Right after a commit the queue is nearly empty: the answers are only now
                # going out and the next requests are on their way. Waiting a millisecond
                # lets them join this batch instead of paying a whole commit for a handful
                # (bench/push.py, 2 workers on 2 cores: no linger ~3.7k pushes/s, 1 ms
                # ~5.8k, 3 ms ~4.8k).
                await asyncio.sleep(self.linger)
            batch: list[_Job] = [first]  # type: ignore[list-item]
            while len(batch) < self.max_batch and not queue.empty():
                item = queue.get_nowait()
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            try:
                await loop.run_in_executor(self._executor, self._commit, batch)
            except Exception as exc:
                self.stats.failed_batches += 1
                log.exception("group commit of %d items failed", len(batch))
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                for job in batch:
                    if not job.future.done():
                        job.future.set_result(None)
            self.stats.batches += 1
            self.stats.items += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            if stop:
                # Anything queued behind the sentinel arrived while stopping: fail it
                # rather than leave its request waiting forever.
                while not queue.empty():
                    item = queue.get_nowait()
                    if isinstance(item, _Job) and not item.future.done():
                        item.future.set_exception(RuntimeError("server shutting down"))

    def _commit(self, batch: list[_Job]) -> None:
        """One transaction for the whole batch (runs on the writer thread)."""
        records: dict[int, tuple[Account, list[Record]]] = {}
        entries: list[NewEntry] = []
        for job in batch:
            if job.account is not None and job.record is not None:
                records.setdefault(job.account.id, (job.account, []))[1].append(job.record)
            elif job.entry is not None:
                entries.append(job.entry)
        now = self.clock()
        try:
            with self._process_lock(), self.store_db.write() as conn:
                for cached, recs in records.values():
                    account = _current(conn, cached)
                    recs.sort(key=_lock_order)
                    senders = self._senders.get(account.id, len(recs))
                    store_batch(conn, account, recs, local_today(now, account.tz), senders)
                add_entries(conn, entries)
        except BaseException:
            # Ids interned by the rolled-back transaction do not exist: forget them all.
            self._senders.clear()
            raise


def _lock_order(record: Record) -> tuple[int, int, str, int, str]:
    """Rows in one order in every worker, so concurrent transactions cannot deadlock.

    On PostgreSQL two workers may insert the same retried MsgIds at once; each insert
    waits for the other transaction's uncommitted row, and in opposite orders the two
    would wait on each other until one is aborted.
    """
    if isinstance(record, Message):
        return (0, record.msg_id, "", 0, "")
    return (1, 0, record.openid, record.create_time, record.event)


class _SenderCache:
    """openid → interned sender id per account, kept across batches (commit thread only).

    Without it every batch would insert-or-ignore and re-select each of its senders; with
    it a batch only asks about senders new to this process. It is rebuilt after
    ``limit`` records, which bounds its memory on accounts with millions of users (the
    active ones are re-read once), and dropped when a commit fails.
    """

    def __init__(self, limit: int = 200_000) -> None:
        self.limit = limit
        self._ids: dict[int, tuple[SenderIds, int]] = {}

    def get(self, account_id: int, records: int) -> SenderIds:
        found = self._ids.get(account_id)
        if found is None or found[1] + records > self.limit:
            found = (SenderIds(account_id), 0)
        self._ids[account_id] = (found[0], found[1] + records)
        return found[0]

    def clear(self) -> None:
        self._ids.clear()


_ACCOUNT_NOW = select(accounts.c.tz, accounts.c.follower_base).where(
    accounts.c.id == bindparam("account_id")
)


def _current(conn: Connection, cached: Account) -> Account:
    """``cached`` with the columns that decide what a batch makes dirty read afresh.

    ``follower_base`` and ``tz`` are read inside the write transaction: a cached copy up
    to a second old could miss a follower import that committed just before, and leave
    later periods' count_interval 0 stale. Two columns, not the whole row: this runs
    once per batch on the hot path.
    """
    row = conn.execute(_ACCOUNT_NOW, {"account_id": cached.id}).first()
    if row is None:
        raise LookupError(f"account {cached.appid} no longer exists")
    if row.tz == cached.tz and bool(row.follower_base) == cached.follower_base:
        return cached
    return replace(cached, tz=row.tz, follower_base=bool(row.follower_base))


class _FileLock:
    """An exclusive ``flock`` on a file beside the database, held around each group commit.

    With several worker processes on one SQLite file, the loser of ``BEGIN IMMEDIATE``
    sleeps in SQLite's busy handler (1, 2, 5, 10, … ms) and wakes late — or finds the
    lock taken again and sleeps longer, so one worker can starve. Waiting on a ``flock``
    wakes the moment the other process's commit ends. Two processes committing in a
    loop (3 ms per commit): busy handler p99 wait 8.5 ms, worst 330 ms; flock p99
    3.4 ms, worst 4.5 ms, and more commits in all.
    """

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)


def quarantine_entry(appid: str, reason: str, query_string: str, body: bytes) -> NewEntry:
    """What to keep of a signed push that could not be stored."""
    return NewEntry(
        appid=appid, received_at=int(time.time()), reason=reason, query=query_string, body=body
    )
