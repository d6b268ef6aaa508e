"""Mirror every dataset (one per datacube endpoint) of one account into the user's database.

WeChat's documentation asks developers to keep these statistics in their own database —
to answer their users fast and to spare WeChat's quota. ``sync`` does that:

* one table per dataset, upserted on the natural key (``schema.py``); a row that WeChat
  no longer reports for a re-fetched period (a recount brought it to zero) is deleted,
  so the mirror equals the source row for row;
* only rows that changed are written, so a second run reports (and writes) nothing;
* ``wechat_sync_state`` keeps, per dataset, the contiguous range already mirrored
  (``first_day`` … ``last_complete_day``); each window's rows and the state move in one
  transaction, so a run killed half-way resumes after the last committed window;
* a 61503 (data not ready, e.g. yesterday before 08:00) stops *that dataset's* progress
  at the day before the first unready period — found by asking label by label inside
  the failing window — and the next run retries from there;
* windows are fetched ``concurrency`` at a time from a thread pool (the client is
  thread-safe) and written in order by the calling thread;
* any other error (bad credentials, 45009 quota) stops the whole run with
  ``SyncAborted``, which carries the partial report and the WeChat error.

The CLI (``msgcube sync``) is a thin wrapper around ``sync`` and ``run_daily``.
"""

from __future__ import annotations

import logging
import threading
import time as _time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, Protocol, TypeVar

from sqlalchemy import Connection, Engine, Table, and_, bindparam, select

from msgcube.client.call_plan import (
    DateLike,
    Row,
    as_date,
    as_endpoint,
    key_fields,
    measure_fields,
    plan_windows,
)
from msgcube.client.clients import Client
from msgcube.client.errors import (
    ClientError,
    DataNotReady,
    InvalidAppSecret,
    IPNotWhitelisted,
    ResponseError,
    Unauthorized,
)
from msgcube.client.schema import TABLES, create_schema, open_database, sync_state, upsert
from msgcube.domain.endpoints import ENDPOINTS, Endpoint
from msgcube.domain.periods import DEFAULT_TZ, local_today, period_last_day, period_start, zone
from msgcube.domain.windows import Window

log = logging.getLogger(__name__)

DEFAULT_LOOKBACK = timedelta(days=90)
"""How far back a first sync goes without ``since`` (WeChat's 2014-12-01 floor is too far)."""

Status = Literal["pending", "up to date", "complete", "not ready", "aborted"]
"""``pending``: planned, not reached (the run stopped first); ``up to date``: nothing to
fetch; ``complete``: fetched up to ``until``; ``not ready``: stopped at a 61503 period;
``aborted``: stopped by the error in ``SyncAborted``."""


@dataclass
class DatasetReport:
    """What happened to one dataset in one run."""

    dataset: str
    windows: int = 0
    """Windows planned (the minimum number of calls for the range)."""
    calls: int = 0
    """HTTP requests actually made (retries and 61503 narrowing included)."""
    rows_fetched: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_deleted: int = 0
    first_day: date | None = None
    last_complete_day: date | None = None
    status: Status = "up to date"
    not_ready: date | None = None
    """The first period (label) that answered 61503; retried on the next run."""

    @property
    def rows_written(self) -> int:
        return self.rows_inserted + self.rows_updated + self.rows_deleted


@dataclass
class SyncReport:
    """The outcome of ``sync``: per-dataset reports plus totals."""

    appid: str
    until: date
    datasets: dict[str, DatasetReport] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def calls(self) -> int:
        return sum(d.calls for d in self.datasets.values())

    @property
    def rows_written(self) -> int:
        return sum(d.rows_written for d in self.datasets.values())

    @property
    def complete(self) -> bool:
        """True when every dataset is mirrored up to ``until`` (nothing pending)."""
        return all(d.status in ("up to date", "complete") for d in self.datasets.values())

    def summary(self) -> str:
        """A plain-text table, one line per dataset, for logs and the CLI."""
        head = f"{'dataset':<26} {'calls':>6} {'new':>7} {'changed':>8} {'deleted':>8}  synced"
        lines = [f"sync {self.appid} up to {self.until}", head]
        for d in self.datasets.values():
            span = f"{d.first_day} … {d.last_complete_day}" if d.first_day else "—"
            note = f" (not ready from {d.not_ready})" if d.not_ready else ""
            lines.append(
                f"{d.dataset:<26} {d.calls:>6} {d.rows_inserted:>7} {d.rows_updated:>8} "
                f"{d.rows_deleted:>8}  {span} [{d.status}]{note}"
            )
        lines.append(f"{self.calls} calls, {self.rows_written} rows written in {self.seconds:.1f}s")
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SyncProgress:
    """Sent to ``progress`` when a dataset is planned, after each window, and at its end."""

    dataset: str
    windows_total: int
    windows_done: int
    rows_written: int
    status: Status | Literal["running"]


class SyncAborted(ClientError):
    """A run stopped by an error other than 61503; what was written before it is kept."""

    def __init__(self, report: SyncReport, error: BaseException) -> None:
        self.report = report
        self.error = error
        super().__init__(
            f"sync of {report.appid} stopped: {error} — {report.rows_written} rows written "
            "before that are kept; the next run resumes after them"
        )


@dataclass(frozen=True, slots=True)
class _State:
    first_day: date
    last_complete_day: date


@dataclass(frozen=True, slots=True)
class WindowRows:
    """What one fetched window asks a mirror to store."""

    ep: Endpoint
    appid: str
    window: Window
    rows: list[Row]
    state: tuple[date, date]
    """The dataset's (first_day, last_complete_day) once this window is stored."""
    now: datetime


class Mirror(Protocol):
    """Where ``sync`` writes. The user's SQL database by default (``SqlMirror``); the CLI
    plugs in ClickHouse (``cli/sync_clickhouse.py``) through the same three calls."""

    def prepare(self) -> None:
        """Create the tables (idempotent)."""

    def states(self, appid: str) -> dict[str, tuple[date, date]]:
        """Dataset → (first_day, last_complete_day) already mirrored for ``appid``."""
        ...

    def write(self, batch: WindowRows) -> tuple[int, int, int]:
        """Make the window's rows equal ``batch.rows`` and record ``batch.state``,
        atomically or with the state last (so a crash re-fetches the window); returns
        (inserted, updated, deleted)."""
        ...


class SqlMirror:
    """The mirror in a SQLite or PostgreSQL database: each window in one transaction."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def prepare(self) -> None:
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"sync writes to SQLite or PostgreSQL, not {self.engine.dialect.name}")
        create_schema(self.engine)

    def states(self, appid: str) -> dict[str, tuple[date, date]]:
        with self.engine.connect() as conn:
            return {
                name: (s.first_day, s.last_complete_day)
                for name, s in _load_states(conn, appid).items()
            }

    def write(self, batch: WindowRows) -> tuple[int, int, int]:
        appid, ep, state, now = batch.appid, batch.ep, batch.state, batch.now
        with self.engine.begin() as conn:
            counts = apply_rows(conn, ep, appid, batch.window, batch.rows, now)
            conn.execute(
                upsert(
                    conn,
                    sync_state,
                    ["appid", "dataset"],
                    {
                        "first_day": lambda ex: ex.first_day,
                        "last_complete_day": lambda ex: ex.last_complete_day,
                        "updated_at": lambda ex: ex.updated_at,
                    },
                ),
                {
                    "appid": appid,
                    "dataset": ep.name,
                    "first_day": state[0],
                    "last_complete_day": state[1],
                    "updated_at": now,
                },
            )
        return counts


class _Skipped(Exception):
    """A job that did not run because its dataset or the whole run already stopped."""


def sync(
    client: Client,
    db_url: str | Engine | Mirror,
    appid: str | None = None,
    since: DateLike | None = None,
    until: DateLike | None = None,
    datasets: Iterable[str | Endpoint] | None = None,
    progress: Callable[[SyncProgress], None] | None = None,
    *,
    concurrency: int = 4,
    refresh_days: int = 0,
) -> SyncReport:
    """Mirror ``datasets`` (default: every endpoint's) of ``appid`` into ``db_url``.

    ``since`` (default: 90 days ago on a first run) is the earliest day wanted; with a
    state already recorded, only days after ``last_complete_day`` are fetched, plus —
    when ``since`` is given and lies before the mirrored range — the missing days before
    it (a backfill). Week and month datasets include the whole period containing
    ``since``. ``until`` defaults to (and is capped at) yesterday in the client's time
    zone. ``refresh_days`` re-fetches that many days before the resume point, to pick
    up late recounts. ``db_url`` may also be an ``Engine``, or any ``Mirror``.

    Raises ``SyncAborted`` for errors other than 61503 (after committing what was done).
    """
    started = _time.monotonic()
    appid = appid or client.appid
    if not appid:
        raise ValueError("sync needs the appid (the client was built from a token only)")
    if concurrency < 1:
        raise ValueError("concurrency must be ≥ 1")
    eps = _select(datasets)
    today = client.today()
    yesterday = today - timedelta(days=1)
    if since is not None and until is not None and as_date(since) > as_date(until):
        raise ValueError(f"since ({as_date(since)}) is after until ({as_date(until)})")
    last = min(as_date(until), yesterday) if until is not None else yesterday
    wanted = as_date(since) if since is not None else today - DEFAULT_LOOKBACK

    engine = open_database(db_url) if isinstance(db_url, str) else db_url
    mirror = SqlMirror(engine) if isinstance(engine, Engine) else engine
    try:
        mirror.prepare()
        report = SyncReport(appid=appid, until=last)
        states = {name: _State(*span) for name, span in mirror.states(appid).items()}
        plans: list[tuple[Endpoint, list[Window], list[Window]]] = []
        for ep in eps:
            state = states.get(ep.name)
            backfill, forward = _plan(
                client, ep, state, wanted, since is not None, last, today, refresh_days
            )
            windows = len(backfill) + len(forward)
            dataset = DatasetReport(ep.name, windows, status="pending" if windows else "up to date")
            if state is not None:
                dataset.first_day = state.first_day
                dataset.last_complete_day = state.last_complete_day
            report.datasets[ep.name] = dataset
            plans.append((ep, backfill, forward))
        calls_before = {ep.name: client.calls[ep.path] for ep in eps}
        runner = _Runner(client, mirror, appid, report, progress, states, wanted)
        try:
            runner.run(plans, concurrency)
        finally:
            for ep in eps:
                report.datasets[ep.name].calls = client.calls[ep.path] - calls_before[ep.name]
            report.seconds = _time.monotonic() - started
        return report
    finally:
        if isinstance(db_url, str) and isinstance(engine, Engine):
            engine.dispose()


def _select(datasets: Iterable[str | Endpoint] | None) -> list[Endpoint]:
    """The chosen endpoints, in table order (so reports and runs are deterministic)."""
    if datasets is None:
        return list(ENDPOINTS)
    chosen = {as_endpoint(name).name for name in datasets}
    return [ep for ep in ENDPOINTS if ep.name in chosen]


def _plan(
    client: Client,
    ep: Endpoint,
    state: _State | None,
    wanted: date,
    since_given: bool,
    last: date,
    today: date,
    refresh_days: int,
) -> tuple[list[Window], list[Window]]:
    """Backfill windows (newest first) and forward windows (oldest first) of one dataset."""
    period = ep.label_period
    start = period_start(period, wanted)

    def windows(first: date, end: date) -> list[Window]:
        if first > end:
            return []
        return plan_windows(ep, first, end, today=today, profile=client.span_profile)

    if state is None:
        return [], windows(start, last)
    resume = state.last_complete_day + timedelta(days=1)
    if refresh_days > 0:
        resume = max(state.first_day, period_start(period, resume - timedelta(days=refresh_days)))
    backfill: list[Window] = []
    if since_given and start < state.first_day:
        backfill = windows(start, state.first_day - timedelta(days=1))[::-1]
    return backfill, windows(resume, last)


def _load_states(conn: Connection, appid: str) -> dict[str, _State]:
    rows = conn.execute(
        select(sync_state.c.dataset, sync_state.c.first_day, sync_state.c.last_complete_day).where(
            sync_state.c.appid == appid
        )
    )
    return {row.dataset: _State(row.first_day, row.last_complete_day) for row in rows}


class _Runner:
    """Fetches all windows through a pool and applies them in order, one dataset at a time."""

    def __init__(
        self,
        client: Client,
        mirror: Mirror,
        appid: str,
        report: SyncReport,
        progress: Callable[[SyncProgress], None] | None,
        states: dict[str, _State],
        wanted: date,
    ) -> None:
        self.client = client
        self.mirror = mirror
        self.appid = appid
        self.report = report
        self.progress = progress
        self.states = dict(states)
        self.wanted = wanted
        self._lock = threading.Lock()
        self.failure: BaseException | None = None
        """The first fatal error a pool job met: every job after it is skipped."""
        self.halted_from: dict[str, date] = {}
        """Per dataset, the earliest window that answered 61503: later ones are skipped."""

    def _emit(self, dataset: DatasetReport, done: int, status: Status | Literal["running"]) -> None:
        if self.progress is not None:
            self.progress(
                SyncProgress(dataset.dataset, dataset.windows, done, dataset.rows_written, status)
            )

    def _fetch(self, ep: Endpoint, window: Window, backfill: bool) -> list[Row]:
        """Runs in the pool. Skips work once the run, or this dataset's progress, has stopped."""
        with self._lock:
            halted = self.halted_from.get(ep.name)
            if self.failure is not None or (
                not backfill and halted is not None and window.begin > halted
            ):
                raise _Skipped
        try:
            return self.client.call(ep, window.begin, window.end)
        except DataNotReady:
            with self._lock:
                if not backfill and (halted is None or window.begin < halted):
                    self.halted_from[ep.name] = window.begin
            raise
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = exc

    def run(self, plans: list[tuple[Endpoint, list[Window], list[Window]]], workers: int) -> None:
        for ep, _, _ in plans:
            self._emit(self.report.datasets[ep.name], 0, "running")
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="msgcube-sync")
        try:
            queued = [
                (
                    ep,
                    [(w, True, pool.submit(self._fetch, ep, w, True)) for w in back]
                    + [(w, False, pool.submit(self._fetch, ep, w, False)) for w in fwd],
                )
                for ep, back, fwd in plans
            ]
            for ep, jobs in queued:
                self._run_dataset(ep, jobs)
        except BaseException as exc:
            self._fail(exc)
            pool.shutdown(wait=True, cancel_futures=True)
            if isinstance(exc, ClientError) and not isinstance(exc, SyncAborted):
                raise SyncAborted(self.report, exc) from exc
            raise
        pool.shutdown(wait=True)

    def _run_dataset(
        self, ep: Endpoint, jobs: list[tuple[Window, bool, Future[list[Row]]]]
    ) -> None:
        dataset = self.report.datasets[ep.name]
        done = 0
        if jobs:
            dataset.status = "complete"
        for window, backfill, future in jobs:
            try:
                rows = future.result()
            except DataNotReady:
                self._narrow(ep, window, backfill)
                break
            except BaseException as exc:
                dataset.status = "aborted"
                self._emit(dataset, done, "aborted")
                if isinstance(exc, _Skipped) and self.failure is not None:
                    raise self.failure from None  # the error that stopped the pool
                raise
            self._write(ep, window, rows, backfill)
            done += 1
            self._emit(dataset, done, "running")
        self._emit(dataset, done, dataset.status)

    def _narrow(self, ep: Endpoint, window: Window, backfill: bool) -> None:
        """Find the first unready period of ``window``; keep the ready ones before it."""
        dataset = self.report.datasets[ep.name]
        dataset.status = "not ready"
        labels = window.labels[::-1] if backfill else window.labels
        for label in labels if len(window.labels) > 1 else ():
            try:
                rows = self.client.call(ep, label, label)
            except DataNotReady:
                dataset.not_ready = label
                return
            self._write(ep, Window(label, label, (label,)), rows, backfill)
        dataset.not_ready = dataset.not_ready or window.labels[0]

    def _write(self, ep: Endpoint, window: Window, rows: list[Row], backfill: bool) -> None:
        """One window's rows and the new sync state, in one transaction."""
        dataset = self.report.datasets[ep.name]
        state = self.states.get(ep.name)
        period = ep.label_period
        if state is None:
            state = _State(period_start(period, self.wanted), period_last_day(period, window.end))
        elif backfill:
            state = _State(min(window.begin, state.first_day), state.last_complete_day)
        else:
            last = max(state.last_complete_day, period_last_day(period, window.end))
            state = _State(state.first_day, last)
        now = datetime.now(UTC)
        span = (state.first_day, state.last_complete_day)
        counts = self.mirror.write(WindowRows(ep, self.appid, window, rows, span, now))
        self.states[ep.name] = state
        dataset.rows_fetched += len(rows)
        dataset.rows_inserted += counts[0]
        dataset.rows_updated += counts[1]
        dataset.rows_deleted += counts[2]
        dataset.first_day, dataset.last_complete_day = state.first_day, state.last_complete_day


def _db_key(ep: Endpoint, row: Mapping[str, Any]) -> tuple[Any, ...]:
    try:
        return tuple(
            date.fromisoformat(row[f]) if f == "ref_date" else int(row[f]) for f in key_fields(ep)
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ResponseError(f"{ep.path} sent a malformed row: {row!r}", api=ep.path) from exc


def _excluded(column: str) -> Callable[[Any], Any]:
    return lambda excluded: excluded[column]


def window_rows(
    ep: Endpoint, window: Window, rows: list[Row]
) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """The fetched rows of ``window``: natural key (dates as ``date``) → measures."""
    measures = measure_fields(ep)
    fetched: dict[tuple[Any, ...], tuple[int, ...]] = {}
    for row in rows:
        key = _db_key(ep, row)
        if window.begin <= key[0] <= window.end:
            fetched[key] = tuple(int(row[m]) for m in measures)
    return fetched


def apply_rows(
    conn: Connection, ep: Endpoint, appid: str, window: Window, rows: list[Row], now: datetime
) -> tuple[int, int, int]:
    """Make the table's rows of ``window`` equal ``rows``; returns (inserted, updated, deleted).

    Compares with what is stored first and writes only the difference, so re-syncing
    unchanged data writes nothing (and ``updated_at`` means "last changed").
    """
    table: Table = TABLES[ep.name]
    keys, measures = key_fields(ep), measure_fields(ep)
    stored = {
        tuple(r[: len(keys)]): tuple(r[len(keys) :])
        for r in conn.execute(
            select(*(table.c[k] for k in keys), *(table.c[m] for m in measures)).where(
                table.c.appid == appid, table.c.ref_date.between(window.begin, window.end)
            )
        )
    }
    fetched = window_rows(ep, window, rows)
    changed = [
        {
            "appid": appid,
            **dict(zip(keys, k, strict=True)),
            **dict(zip(measures, v, strict=True)),
            "updated_at": now,
        }
        for k, v in fetched.items()
        if stored.get(k) != v
    ]
    inserted = sum(1 for k in fetched if k not in stored)
    if changed:
        update = {column: _excluded(column) for column in (*measures, "updated_at")}
        conn.execute(upsert(conn, table, ["appid", *keys], update), changed)
    gone = [k for k in stored if k not in fetched]
    if gone:
        stmt = table.delete().where(
            and_(table.c.appid == appid, *(table.c[k] == bindparam(f"k_{k}") for k in keys))
        )
        conn.execute(stmt, [{f"k_{k}": v for k, v in zip(keys, key, strict=True)} for key in gone])
    return inserted, len(changed) - inserted, len(gone)


T = TypeVar("T")


def _fatal(exc: BaseException) -> bool:
    """Errors a daily job cannot outlive: wrong credentials or permissions."""
    error = exc.error if isinstance(exc, SyncAborted) else exc
    return isinstance(error, InvalidAppSecret | Unauthorized | IPNotWhitelisted)


def next_run(at: time, now: datetime, tz: str = DEFAULT_TZ) -> datetime:
    """The next local ``at`` strictly after ``now``, as an aware datetime."""
    local_now = now.astimezone(zone(tz))
    candidate = datetime.combine(local_today(now, tz), at, tzinfo=zone(tz))
    if candidate <= local_now:
        candidate = datetime.combine(local_today(now, tz) + timedelta(days=1), at, tzinfo=zone(tz))
    return candidate


def run_daily(
    at: time,
    job: Callable[[], T],
    *,
    tz: str = DEFAULT_TZ,
    run_now: bool = True,
    max_runs: int | None = None,
    on_result: Callable[[T], None] | None = None,
    on_error: Callable[[BaseException], bool] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = _time.sleep,
) -> int:
    """Run ``job`` now (``run_now``) and then every day at local time ``at`` (``--watch``).

    A failed run is reported to ``on_error``, which returns whether to keep going; by
    default a run that failed for a passing reason (quota, WeChat busy, network) is
    logged and retried at the next ``at``, while wrong credentials or permissions stop
    the loop (raised), since waiting a day would not fix them. Sleeps in slices of at
    most 5 minutes so a suspended laptop or a changed clock does not skip a day.
    Returns the number of runs when ``max_runs`` is reached.
    """

    def keep_going(exc: BaseException) -> bool:
        if on_error is not None:
            return on_error(exc)
        if _fatal(exc):
            return False
        log.warning("scheduled run failed, next one at %s: %s", at, exc)
        return True

    runs = 0
    due = clock() if run_now else next_run(at, clock(), tz)
    while max_runs is None or runs < max_runs:
        while (wait := (due - clock()).total_seconds()) > 0:
            sleep(min(wait, 300.0))
        runs += 1
        try:
            result = job()
        except Exception as exc:
            if not keep_going(exc):
                raise
        else:
            if on_result is not None:
                on_result(result)
        due = next_run(at, clock(), tz)
    return runs
