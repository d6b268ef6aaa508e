"""The group committer: acknowledged pushes made durable without one fsync per push.

Each push enqueues its record (or its quarantine entry) with a future; a single writer
task takes everything queued, stores it in one ``store.write()`` transaction on its own
thread (with ``analytics_db``: the rows into ClickHouse first, then the marks in that
transaction), then resolves every future at once — or fails them all, so each is answered 500
and WeChat retries. While one commit is on disk the next batch accumulates by itself;
the writer only lingers a millisecond before taking it, so that the requests answered by
the previous commit can come back and share the next fsync instead of leaving it to a
handful (not after a commit of one push: nobody else is coming back; and less and less
often while waits end without the company, as when pushes arrive spread out in time).
On SQLite, the committers of several worker processes take turns through a ``flock``
rather than SQLite's sleeping busy handler, and SQLite's WAL checkpoint is kept off the
commit: an automatic one runs inside the COMMIT that crosses ~1000 pages of log (≈ every
90 one-push batches) and made that push wait for the log to be copied back and the
database file fsynced; here a ``PASSIVE`` checkpoint runs on a thread of its own after
enough commits, beside the next ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from msgcube.domain.messages import Message, Record
from msgcube.domain.periods import local_today
from msgcube.ingest.batch import mark_stored, store_analytics, write_batch
from msgcube.storage.accounts import Account, ingest_view
from msgcube.storage.db import Store
from msgcube.storage.quarantine import Kept, NewEntry, QuarantineLimits, add_entries
from msgcube.storage.records import SenderIds

log = logging.getLogger("msgcube.push")


@dataclass(slots=True)
class CommitStats:
    """Counters for logs and the benchmark: how well pushes share commits."""

    batches: int = 0
    items: int = 0
    largest: int = 0
    failed_batches: int = 0
    checkpoints: int = 0


class FaultReporter(Protocol):
    """Where failed commits are reported (``web.faults.FaultLog`` in the server): a database
    that is down fails every commit, and a traceback per commit would flood the log."""

    def failed(self, where: str, exc: BaseException) -> None: ...

    def succeeded(self, where: str) -> None: ...


FAULT_KIND = "group commit"
"""The name failed commits are reported under."""
CHECKPOINT_FAULT = "WAL checkpoint"
"""… and failed checkpoints (a full disk fails them too)."""


@dataclass(slots=True)
class _Job:
    account: Account | None
    record: Record | None
    entry: NewEntry | None
    future: asyncio.Future[Kept | None]


_STOP = object()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class GroupCommitter:
    """One writer per process that turns concurrent pushes into shared transactions.

    ``store`` and ``quarantine`` return once the item is committed, and raise whatever
    the commit raised (``quarantine`` returns what became of the entry, within
    ``limits``). ``start`` is optional (the first item starts the writer on the
    running loop); ``stop`` commits what is queued, then ends the writer. A failed
    commit is reported to ``faults`` when given (else logged with its traceback).
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], datetime],
        *,
        limits: QuarantineLimits | None = None,
        max_batch: int = 1024,
        linger: float = 0.001,
        checkpoint_every: int = 64,
        faults: FaultReporter | None = None,
    ) -> None:
        self.store_db = store
        self.faults = faults
        self.clock = clock
        self.limits = limits or QuarantineLimits()
        self.max_batch = max_batch
        self.linger = linger
        self.checkpoint_every = checkpoint_every
        self.stats = CommitStats()
        self._queue: asyncio.Queue[_Job | object] | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False
        self._lock: _FileLock | None = None
        self._senders = _SenderCache()
        self._checkpointer: ThreadPoolExecutor | None = None
        self._checkpointing: asyncio.Future[None] | None = None
        self._since_checkpoint = 0
        self._last_batch = 1  # items in the last commit: the company worth waiting for
        self._company: asyncio.Future[None] | None = None  # resolved when it has come
        self._patience = _Patience()

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
        if self.store_db.is_sqlite:
            self._checkpointer = ThreadPoolExecutor(1, thread_name_prefix="msgcube-checkpoint")
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    async def stop(self) -> None:
        """Commit everything already queued, then stop the writer."""
        if self._task is None or self._queue is None:
            return
        self._stopping = True
        self._queue.put_nowait(_STOP)
        if self._company is not None:  # no more company is coming
            _settle(self._company)
        try:
            await self._task
        finally:
            self._task = None
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
            if self._checkpointer is not None:
                # The last checkpoint finishes; the next writer's automatic one (or the
                # last connection's close) takes what it left.
                self._checkpointer.shutdown(wait=True)
                self._checkpointer = None
                self._checkpointing = None
            if self._lock is not None:
                self._lock.close()
                self._lock = None

    async def commit(self, account: Account, record: Record) -> None:
        """Return once ``record`` is committed (or was already stored: a retry)."""
        await self._submit(_Job(account, record, None, self._future()))

    async def quarantine(self, entry: NewEntry) -> Kept:
        """Return once ``entry`` is committed to the quarantine (or refused by its bounds)."""
        kept = await self._submit(_Job(None, None, entry, self._future()))
        assert kept is not None
        return kept

    @staticmethod
    def _future() -> asyncio.Future[Kept | None]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, job: _Job) -> Kept | None:
        if self._stopping:
            raise RuntimeError("the group committer is stopping")
        if self._task is None:
            await self.start()
        assert self._queue is not None
        self._queue.put_nowait(job)
        if self._company is not None and self._queue.qsize() + 1 >= self._last_batch:
            _settle(self._company)  # the committer's wait clears it
        # If the request is cancelled (client gone) the future is cancelled with it, but
        # the job stays queued and is committed regardless: a retry is then a duplicate.
        return await job.future

    async def _run(self) -> None:
        assert self._queue is not None
        assert self._executor is not None
        queue, loop = self._queue, asyncio.get_running_loop()
        stop, shared = False, False
        while not stop:
            first = await queue.get()
            if first is _STOP:
                break
            may_wait = self.linger and shared and queue.qsize() + 1 < self._last_batch
            if may_wait and self._patience.wait():
                # Right after a commit the queue is nearly empty: the answers are only now
                # going out and the next requests are on their way. Waiting for them lets
                # them join this batch instead of paying a whole commit for a handful
                # (bench/push.py, 2 workers on 2 cores: no wait ~3.7k pushes/s, 1 ms
                # ~5.8k, 3 ms ~4.8k). It waits only for as many as the last commit held,
                # and at most ``linger``: once they are here, waiting longer only delays
                # them (8 pushes in flight were waiting a whole millisecond every commit),
                # and a lone push (the last batch held one) waits for nobody. When the
                # company does not come in time (pushes spread out in time, not clients
                # waiting on answers), the waits back off (``_Patience``).
                self._patience.outcome(await self._wait_for_company(loop, queue))
            batch: list[_Job] = [first]  # type: ignore[list-item]
            while len(batch) < self.max_batch and not queue.empty():
                item = queue.get_nowait()
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)  # type: ignore[arg-type]
            try:
                outcomes = await loop.run_in_executor(self._executor, self._commit, batch)
            except Exception as exc:
                self.stats.failed_batches += 1
                if self.faults is None:
                    log.exception("group commit of %d items failed", len(batch))
                else:
                    self.faults.failed(FAULT_KIND, exc)
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
            else:
                if self.faults is not None:
                    self.faults.succeeded(FAULT_KIND)
                for job in batch:
                    if not job.future.done():
                        job.future.set_result(outcomes.get(id(job)))
            shared, self._last_batch = len(batch) > 1, len(batch)
            self._after_commit(len(batch))
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

    async def _wait_for_company(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[_Job | object]
    ) -> bool:
        """Until the queue holds as many items as the last commit did, or ``linger``.

        True when the wait was worth it: at least half of them came.
        """
        before = queue.qsize()
        wanted = self._last_batch - 1 - before
        company = self._company = loop.create_future()
        timer = loop.call_later(self.linger, _settle, company)
        try:
            await company
            return 2 * (queue.qsize() - before) >= wanted
        finally:
            timer.cancel()
            self._company = None

    def _after_commit(self, items: int) -> None:
        """Start a WAL checkpoint beside the next commits once enough were made without.

        Counted in commits plus pushes/16, a stand-in for log pages (a one-push commit
        writes ~11, a push more in a large batch ~0.5): every 64 one-push commits, or
        ~1000 pushes in large batches, about what SQLite's own 1000-page trigger gives.
        """
        if self._checkpointer is None:
            return
        self._since_checkpoint += 1 + items // 16
        if self._since_checkpoint < self.checkpoint_every:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._since_checkpoint = 0
        loop = asyncio.get_running_loop()
        self._checkpointing = loop.run_in_executor(self._checkpointer, self._checkpoint)

    def _checkpoint(self) -> None:
        try:
            self.store_db.checkpoint_wal()
            self.stats.checkpoints += 1
        except Exception as exc:  # the log only grows until the next one: never a push's
            if self.faults is None:
                log.exception("WAL checkpoint failed")
            else:
                self.faults.failed(CHECKPOINT_FAULT, exc)
        else:
            if self.faults is not None:
                self.faults.succeeded(CHECKPOINT_FAULT)

    def _commit(self, batch: list[_Job]) -> dict[int, Kept]:
        """One transaction for the whole batch (runs on the writer thread).

        Returns the outcome of each quarantine job, by ``id(job)``.
        """
        records: dict[int, tuple[Account, list[Record]]] = {}
        quarantined: list[_Job] = []
        for job in batch:
            if job.account is not None and job.record is not None:
                records.setdefault(job.account.id, (job.account, []))[1].append(job.record)
            elif job.entry is not None:
                quarantined.append(job)
        now = self.clock()
        stamp = int(now.timestamp())
        for _, recs in records.values():
            recs.sort(key=_lock_order)
        analytics = self.store_db.analytics
        try:
            stored = None
            if analytics is not None and records:
                # ClickHouse first, outside the write lock: its quorum insert is the long
                # round trip, and holding the lock through it serialised both workers.
                stored = store_analytics(analytics, list(records.values()), stamp)
            with self._process_lock(), self.store_db.write(checkpoint=False) as conn:
                # Accounts in id order, as rows within one (``_lock_order``): two workers'
                # batches for the same accounts take their locks in one order.
                for _, (cached, recs) in sorted(records.items()):
                    account = ingest_view(conn, cached)
                    today = local_today(now, account.tz)
                    if stored is not None:
                        mark_stored(conn, account, stored[account.id], today)
                        continue
                    senders = self._senders.get(account.id, len(recs))
                    write_batch(conn, account, recs, today, senders, received_at=stamp)
                entries = [job.entry for job in quarantined if job.entry is not None]
                kept = add_entries(conn, entries, self.limits, stamp)
        except BaseException:
            # Ids interned by the rolled-back transaction do not exist: forget them all.
            self._senders.clear()
            raise
        return {id(job): outcome for job, outcome in zip(quarantined, kept, strict=True)}


class _Patience:
    """Whether the next batch waits for company: not after waits that were in vain.

    Every wait that ends with less than half the company come skips the next 1, 3, 7, …
    (at most ``MAX_SKIP``) batches that would have waited; one that sees it come resets
    this. Pushes that arrive spread out in time (WeChat sends an account's messages as
    its users write them) rarely come back within the linger, and a push would pay the
    whole linger on top of its commit (bench/relay.py, 8 connections paced at 300 pushes/s:
    +0.1 ms at the median); clients that wait on their answers come back together, and
    there the wait is what lets them share one fsync.
    """

    MAX_SKIP = 63

    __slots__ = ("_backoff", "_skip")

    def __init__(self) -> None:
        self._backoff = 0
        self._skip = 0

    def wait(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def outcome(self, came: bool) -> None:
        self._backoff = 0 if came else min(2 * self._backoff + 1, self.MAX_SKIP)
        self._skip = self._backoff


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
