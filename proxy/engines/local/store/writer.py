"""The single SQLite writer: one thread, one connection, group commit.

Jobs are gathered on the submitting event loop: while a batch of that loop is being
written, new jobs wait there, and they go to the thread as one batch ``GATHER_SECONDS``
after the previous one committed (when none is in flight, at the end of the loop's current
iteration). So a burst of enqueues costs one fsync and one thread wake-up, batches grow
with the load by themselves, and an idle proxy commits at once. Each caller's future
resolves only after its batch committed.

Jobs that need durability (enqueues) make the batch commit with the configured
``synchronous`` level; batches of bookkeeping only (leases, completions, retries) commit
with ``NORMAL``: in WAL mode they survive a process crash, and losing one to a power cut
only means a task is delivered again, which at-least-once delivery allows.

A *lazy* job (a completion: nobody waits on it) waits ``BOOKKEEPING_GATHER_SECONDS``
(or until ``LAZY_MAX`` gathered) and then goes with whatever batch goes next: deleting
tasks rewrites the pages at the old end of the table and its indexes, so fifty deletes in
one commit write about the pages two would.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future as ThreadFuture
from typing import Any, TypeVar

from proxy.errors import EngineUnavailableError

T = TypeVar("T")
logger = logging.getLogger("ingest_proxy.local")

# Bench-only: milliseconds of extra delay per durable commit, to imitate a disk with slow
# fsync. Never set this in production.
BENCH_COMMIT_DELAY_ENV = "INGEST_PROXY_BENCH_ONLY_COMMIT_DELAY_MS"

Group = Callable[[sqlite3.Connection, list[Any]], list[Any]]
_STOP = object()
PAGE_SIZE = 16384  # bytes, for new database files
GATHER_SECONDS = 0.0003  # under load, wait this long after a commit before the next batch
# Lazy jobs (completions) gather this long, or up to LAZY_MAX of them, before they go. At
# 500 deliveries/s that is 50 deletes per commit; riding with every enqueue batch instead
# (hundreds a second), each delete rewrote the same 16 KiB pages nearly alone.
BOOKKEEPING_GATHER_SECONDS = 0.1
LAZY_MAX = 500


class _Job:
    __slots__ = ("durable", "fn", "future", "group", "loop", "payload")

    def __init__(
        self,
        group: Group | None,
        fn: Callable[[sqlite3.Connection], Any] | None,
        payload: Any,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        durable: bool,
    ) -> None:
        self.group = group
        self.fn = fn
        self.payload = payload
        self.loop = loop
        self.future = future
        self.durable = durable


class _Gathering:
    """The jobs one event loop submitted since its last batch went to the thread."""

    __slots__ = ("in_flight", "jobs", "lazy", "lazy_timer", "scheduled")

    def __init__(self) -> None:
        self.jobs: list[_Job] = []  # for the next batch
        self.lazy: list[_Job] = []  # lazy jobs not yet due
        self.lazy_timer: asyncio.TimerHandle | None = None  # when they are due
        self.in_flight = False  # a batch of this loop is being written
        self.scheduled = False  # a flush is scheduled on the loop


def unavailable(exc: sqlite3.Error) -> EngineUnavailableError:
    """The error a client sees when SQLite cannot write (disk full, locked, read-only)."""
    return EngineUnavailableError(
        f"The task store cannot write right now ({exc}); nothing was stored.", retry_after=1
    )


class Writer:
    """Owns the write connection to ``path`` and the thread that uses it.

    ``synchronous`` is the SQLite level for durable batches (``FULL`` by default);
    ``on_transaction_end(committed)`` is called in the writer thread after each batch's
    transaction, with whether it committed (the store counts what a batch wrote with it).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        busy_timeout: float = 2.0,
        on_transaction_end: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.on_transaction_end = on_transaction_end
        self._inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()  # lists of jobs, or _STOP
        self._gathering: dict[asyncio.AbstractEventLoop, _Gathering] = {}
        self._worker: threading.Thread | None = None
        self._closed = False
        self._sync_now = ""
        self.last_failure: tuple[float, str] | None = None  # (monotonic time, reason)
        self._identity: tuple[int, int] | None = None
        delay = os.environ.get(BENCH_COMMIT_DELAY_ENV, "")
        self._commit_delay = float(delay) / 1000 if delay else 0.0

    # ------------------------------------------------------------ lifecycle

    def start(self, init: Callable[[sqlite3.Connection], T]) -> T:
        """Open the database in the writer thread and run ``init`` there (blocking)."""
        ready: ThreadFuture[T] = ThreadFuture()
        self._worker = threading.Thread(
            target=self._main, args=(init, ready), name="ingest-proxy-sqlite", daemon=True
        )
        self._worker.start()
        return ready.result()

    def close(self) -> None:
        """Run the jobs already submitted, then close the connection (blocking)."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(_STOP)
        if self._worker is not None:
            self._worker.join()

    # ------------------------------------------------------------ submitting

    def submit(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        durable: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[T]:
        """Run ``fn(connection)`` in the next batch; the future resolves after the commit.
        ``loop``: the running loop, when the caller knows it (see :meth:`submit_grouped`)."""
        return self._put(None, fn, None, durable, loop)

    def submit_grouped(
        self,
        group: Group,
        payload: Any,
        *,
        durable: bool,
        lazy: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[Any]:
        """Add ``payload`` to ``group``'s list in the next batch: ``group(connection,
        payloads)`` runs once per batch and returns one result (or exception) per payload.

        ``lazy``: the job waits ``BOOKKEEPING_GATHER_SECONDS`` (or until ``LAZY_MAX`` are
        gathered), then goes with the next batch (see the module docstring). ``loop`` is
        the running loop, when the caller knows it: asking asyncio costs a system call (a
        fork check), once per enqueue otherwise.
        """
        return self._put(group, None, payload, durable, loop, lazy and not durable)

    def _put(
        self,
        group: Group | None,
        fn: Callable[[sqlite3.Connection], Any] | None,
        payload: Any,
        durable: bool,
        loop: asyncio.AbstractEventLoop | None = None,
        lazy: bool = False,
    ) -> asyncio.Future[Any]:
        if self._closed:
            raise EngineUnavailableError("The task store is closed (shutting down).", retry_after=1)
        if loop is None:
            loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        gathering = self._gathering.get(loop)
        if gathering is None:
            gathering = self._gathering[loop] = _Gathering()
        job = _Job(group, fn, payload, loop, future, durable)
        if lazy:
            gathering.lazy.append(job)
            if len(gathering.lazy) >= LAZY_MAX:
                self._lazy_due(gathering)
            elif gathering.lazy_timer is None:
                gathering.lazy_timer = loop.call_later(
                    BOOKKEEPING_GATHER_SECONDS, self._lazy_due, gathering
                )
            return future
        gathering.jobs.append(job)
        self._flush_soon(gathering, loop)
        return future

    def _flush_soon(self, gathering: _Gathering, loop: asyncio.AbstractEventLoop) -> None:
        """Flush at the end of this loop iteration, unless a batch is being written (then
        :meth:`_settle` sends what gathered) or a flush is scheduled already."""
        if not gathering.in_flight and not gathering.scheduled:
            gathering.scheduled = True
            loop.call_soon(self._flush, gathering)

    def _lazy_due(self, gathering: _Gathering) -> None:
        """The lazy jobs go with the next batch (on the loop)."""
        if gathering.lazy_timer is not None:
            gathering.lazy_timer.cancel()
            gathering.lazy_timer = None
        gathering.jobs += gathering.lazy
        gathering.lazy = []
        self._flush_soon(gathering, gathering.jobs[0].loop)

    def _flush(self, gathering: _Gathering) -> None:
        """Hand the loop's gathered jobs to the thread (on the loop)."""
        gathering.scheduled = False
        if gathering.in_flight or not gathering.jobs:
            return
        jobs, gathering.jobs = gathering.jobs, []
        if self._closed:
            error = EngineUnavailableError("The task store is closed.", retry_after=1)
            _settle([(job, None, error) for job in jobs])
            return
        gathering.in_flight = True
        self._inbox.put(jobs)

    def _settle(self, entries: list[tuple[_Job, Any, BaseException | None]]) -> None:
        """Resolve the futures of a written batch, then send the jobs gathered meanwhile
        (on the loop)."""
        _settle(entries)
        loop = entries[0][0].loop
        gathering = self._gathering.get(loop)
        if gathering is not None:
            gathering.in_flight = False
            if gathering.jobs and not gathering.scheduled:
                # Jobs arrived while that batch was written: the proxy is busy, and more
                # are on their way. Wait a moment for them: fewer, larger commits cost less
                # CPU per task (the fsync and the index pages are per commit).
                gathering.scheduled = True
                loop.call_later(GATHER_SECONDS, self._flush, gathering)

    # ------------------------------------------------------------ the thread

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=self.busy_timeout
        )
        # Only takes effect for a new file (a WAL database keeps its page size). Fewer,
        # larger pages mean fewer WAL frames per commit: about a quarter less CPU per
        # 1 KiB task than the default 4 KiB.
        conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute("PRAGMA journal_size_limit=67108864")
        self._identity = _identity(self.path)
        return conn

    def _main(self, init: Callable[[sqlite3.Connection], Any], ready: ThreadFuture[Any]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect()
            ready.set_result(init(conn))
        except BaseException as exc:
            self._closed = True
            if conn is not None:
                conn.close()
            ready.set_exception(exc)
            return
        try:
            self._loop(conn)
        except BaseException:
            logger.exception("the task store writer stopped")
            raise
        finally:
            self._closed = True
            self._fail_waiting()
            try:
                conn.close()
            except sqlite3.Error:
                logger.exception("closing the task store failed")

    def _fail_waiting(self) -> None:
        """Fail jobs submitted too late to run, so no caller waits forever."""
        left: list[tuple[_Job, Any, BaseException | None]] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                error = EngineUnavailableError("The task store is closed.", retry_after=1)
                left.extend((job, None, error) for job in item)
        self._resolve(left)

    def _loop(self, conn: sqlite3.Connection) -> None:
        while True:
            jobs: list[_Job] = []
            stop = False
            item = self._inbox.get()
            while True:
                if item is _STOP:
                    stop = True
                else:
                    jobs.extend(item)
                try:
                    item = self._inbox.get_nowait()
                except queue.Empty:
                    break
            if jobs:
                self._run_batch(conn, jobs)
            if stop:
                return

    def _set_sync(self, conn: sqlite3.Connection, level: str) -> None:
        if level != self._sync_now:
            conn.execute(f"PRAGMA synchronous={level}")
            self._sync_now = level

    def _run_batch(self, conn: sqlite3.Connection, jobs: Sequence[_Job]) -> None:
        results, committed = self._commit(conn, jobs)
        if not committed:
            durable = [job for job in jobs if job.durable]
            if durable and len(durable) < len(jobs):
                # A failed enqueue (a full disk) must not take the bookkeeping that rode
                # with it down too (a lost completion means a second delivery): each part
                # on its own, once.
                rest = [job for job in jobs if not job.durable]
                results = self._commit(conn, rest)[0] + self._commit(conn, durable)[0]
        self._resolve(results)

    def _commit(
        self, conn: sqlite3.Connection, jobs: Sequence[_Job]
    ) -> tuple[list[tuple[_Job, Any, BaseException | None]], bool]:
        """Run ``jobs`` in one transaction: each job's result or error, and whether the
        transaction committed."""
        durable = sum(1 for job in jobs if job.durable)
        results: list[tuple[_Job, Any, BaseException | None]] = []
        try:
            if durable and _identity(self.path) != self._identity:
                # Deleted or replaced under us: SQLite would go on writing to the old inode,
                # and every task "stored" there would be gone at the next start.
                raise sqlite3.OperationalError("the database file was removed or replaced")
            self._set_sync(conn, self.synchronous if durable else "NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            groups: dict[Group, list[_Job]] = {}
            for job in jobs:
                if job.group is not None:
                    groups.setdefault(job.group, []).append(job)
            for group, members in groups.items():
                outs = group(conn, [job.payload for job in members])
                for job, out in zip(members, outs, strict=True):
                    if isinstance(out, BaseException):
                        results.append((job, None, out))
                    else:
                        results.append((job, out, None))
            for job in jobs:
                if job.fn is not None:
                    results.append((job, job.fn(conn), None))
            conn.execute("COMMIT")
            if durable and self._commit_delay:
                time.sleep(self._commit_delay)
        except sqlite3.Error as exc:
            self._rollback(conn)
            logger.error("task store batch of %d failed: %s", len(jobs), exc)
            if durable:
                self.last_failure = (time.monotonic(), str(exc))
            self._ended(committed=False)
            return [(job, None, unavailable(exc)) for job in jobs], False
        except Exception as exc:
            self._rollback(conn)
            logger.exception("task store batch of %d failed", len(jobs))
            self._ended(committed=False)
            return [(job, None, exc) for job in jobs], False
        if durable:
            self.last_failure = None
        self._ended(committed=True)
        return results, True

    def _ended(self, *, committed: bool) -> None:
        if self.on_transaction_end is not None:
            self.on_transaction_end(committed)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                logger.exception("rollback failed")

    def _resolve(self, results: list[tuple[_Job, Any, BaseException | None]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any, BaseException | None]]]
        by_loop = {}
        for entry in results:
            by_loop.setdefault(entry[0].loop, []).append(entry)
        for loop, entries in by_loop.items():
            # RuntimeError: the caller's loop is closed; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._settle, entries)


def _settle(entries: list[tuple[_Job, Any, BaseException | None]]) -> None:
    for job, value, error in entries:
        future = job.future
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(value)


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the database file, ``None`` when it is gone."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
