"""The embedded engine's task store: one SQLite file in WAL mode.

Tables: ``tasks`` (one row per task not yet completed, body included, so a backlog lives
on disk, not in memory), ``dead_letters`` (tasks that ran out of attempts, with the last
status and a response snippet), ``dedup`` (Idempotency-Key task id -> first task, kept for
the de-dup window) and ``counters`` (per-queue task count, body bytes and dead letters,
updated in the same transaction as the rows they count, so reading them is O(1)).

The embedded engine's leases are not written (see :meth:`Store.lease`): the dispatcher
holds them in memory. A row written as *leased* (``leased = 1``, ``visible_at`` the lease
expiry instead of the ETA, so the due-task index skips it) is the local Cloud Tasks
server's RunTask; on start every such lease of an earlier process is released.
All writes go through one :class:`Writer` thread (group commit).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from proxy.engines.local.store.counters import bump
from proxy.engines.local.store.header_codec import decode_headers, encode_headers
from proxy.engines.local.store.records import (
    AttemptResult,
    DeadLetter,
    Lease,
    LeasedTask,
    QueueCounts,
)
from proxy.engines.local.store.schema import SCHEMA, SCHEMA_VERSION
from proxy.engines.local.store.writer import Writer
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import EngineUnavailableError

__all__ = [
    "AttemptResult",
    "DeadLetter",
    "Lease",
    "LeasedTask",
    "QueueCounts",
    "Store",
]

_INSERT = (  # visible_at starts as the ETA
    "INSERT INTO tasks (id, queue, method, path, query, headers, body, size, received_at,"
    " request_id, eta, visible_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?11, ?11)"
)
# The columns :func:`leased_task` reads, in its order.
LEASED_TASK = (
    "SELECT seq, id, queue, method, path, query, headers, body, received_at, request_id, eta,"
    " attempts, responses, first_attempt_at, last_status, size FROM tasks"
)
# The due tasks of a queue, oldest ETA first: whole (LEASED_TASK) or their seq only.
_DUE_FIRST = " INDEXED BY tasks_due WHERE queue = ? AND visible_at <= ? ORDER BY visible_at LIMIT ?"
_SEQS = "SELECT seq FROM tasks"
_LEASE = LEASED_TASK + _DUE_FIRST
_DUE = _SEQS + _DUE_FIRST
_NEXT_DUE = "SELECT MIN(visible_at) FROM tasks WHERE queue = ? AND visible_at > ?"
SNIPPET_CHARS = 1024
_IN_CHUNK = 500  # seqs per "IN (...)" list, well under SQLite's 32,766 parameters
FAILURE_MEMORY = 5.0  # seconds a failed durable write keeps readiness down


class Store:
    """The task store in the SQLite file ``path`` (see the module docstring).

    ``dedup_window`` is in seconds; ``clock`` returns Unix seconds (de-dup times);
    ``on_batch(n)`` is called in the writer thread after each transaction that stored
    tasks, with how many (duplicates of an Idempotency-Key store none and are not counted).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        dedup_window: float = 3600.0,
        clock: Callable[[], float],
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.path = path
        self.dedup_window = dedup_window
        self.clock = clock
        self.on_batch = on_batch
        self._stored = 0  # tasks inserted by the open transaction (writer thread only)
        self.writer = Writer(
            path, synchronous=synchronous, on_transaction_end=self._transaction_ended
        )
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()

    # ------------------------------------------------------------ lifecycle

    def open(self, queues: Iterable[str]) -> tuple[dict[str, QueueCounts], int]:
        """Create or upgrade the schema, release leases left by an earlier process; return
        the counters of every queue with rows and the number of leases released (blocking).

        Raises :class:`EngineUnavailableError` when the file cannot be opened for writing.
        """
        names = list(queues)

        def init(conn: sqlite3.Connection) -> tuple[dict[str, QueueCounts], int]:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise EngineUnavailableError(
                    f"{self.path} was written by a newer ingest-proxy (schema {version})."
                )
            conn.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.executemany(
                "INSERT OR IGNORE INTO counters (queue) VALUES (?)", [(n,) for n in names]
            )
            released = conn.execute(
                "UPDATE tasks SET visible_at = eta, leased = 0 WHERE leased = 1"
            ).rowcount
            conn.execute("COMMIT")
            counts = {
                row[0]: QueueCounts(*row)
                for row in conn.execute("SELECT queue, tasks, bytes, dead FROM counters")
            }
            return counts, released

        try:
            result = self.writer.start(init)
            self._reader = sqlite3.connect(
                Path(self.path).absolute().as_uri() + "?mode=ro",
                uri=True,
                check_same_thread=False,
                timeout=1.0,
            )
        except sqlite3.Error as exc:
            raise EngineUnavailableError(f"Cannot open the task store {self.path}: {exc}") from exc
        return result

    def close(self) -> None:
        """Finish submitted writes and close the file (blocking)."""
        self.writer.close()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None

    # ------------------------------------------------------------ enqueue

    def enqueue(
        self, envelope: Envelope, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[EnqueueResult]:
        """Persist ``envelope``; await the result: an :class:`EnqueueResult` once the batch
        holding it committed (``duplicate`` when its Idempotency-Key is within the window).
        ``loop``: the running loop, when the caller knows it."""
        future: asyncio.Future[EnqueueResult]
        future = self.writer.submit_grouped(self._insert, envelope, durable=True, loop=loop)
        return future

    def _insert(self, conn: sqlite3.Connection, envelopes: list[Envelope]) -> list[Any]:
        now = self.clock()
        keyed: list[tuple[str, str, float]] = []
        results: list[Any]
        if any(env.idempotency_key is not None for env in envelopes):
            envelopes, results = self._new_ones(conn, envelopes, now, keyed)
        else:
            results = [EnqueueResult(env.id, env.queue) for env in envelopes]
        encode = encode_headers
        rows = [
            (
                env.id,
                env.queue,
                env.method,
                env.path,
                env.query,
                encode(env.headers),
                env.body,
                len(env.body),
                env.received_at,
                env.request_id,
                env.received_at if env.schedule_time is None else env.schedule_time,
            )
            for env in envelopes
        ]
        conn.executemany(_INSERT, rows)
        self._stored += len(rows)
        if keyed:
            conn.executemany("INSERT OR REPLACE INTO dedup VALUES (?, ?, ?)", keyed)
        deltas: dict[str, list[int]] = {}
        for env in envelopes:
            delta = deltas.get(env.queue)
            if delta is None:
                deltas[env.queue] = [1, len(env.body)]
            else:
                delta[0] += 1
                delta[1] += len(env.body)
        for queue, (count, size) in deltas.items():
            bump(conn, queue, count, size, 0)
        return results

    def _transaction_ended(self, committed: bool) -> None:
        stored, self._stored = self._stored, 0
        if committed and stored and self.on_batch is not None:
            self.on_batch(stored)

    def _new_ones(
        self,
        conn: sqlite3.Connection,
        envelopes: list[Envelope],
        now: float,
        keyed: list[tuple[str, str, float]],
    ) -> tuple[list[Envelope], list[Any]]:
        """The envelopes to store (not duplicates within the de-dup window), and the result
        of every one in order; ``keyed`` gets the de-dup rows to write."""
        horizon = now - self.dedup_window
        seen: dict[str, str] = {}
        fresh: list[Envelope] = []
        results: list[Any] = []
        for env in envelopes:
            if env.idempotency_key is not None:
                first = seen.get(env.id)
                if first is None:
                    row = conn.execute(
                        "SELECT queue FROM dedup WHERE id = ? AND created_at >= ?",
                        (env.id, horizon),
                    ).fetchone()
                    first = row[0] if row else None
                if first is not None:
                    results.append(EnqueueResult(env.id, first, True))
                    continue
                seen[env.id] = env.queue
                keyed.append((env.id, env.queue, now))
            fresh.append(env)
            results.append(EnqueueResult(env.id, env.queue))
        return fresh, results

    # ------------------------------------------------------------ dispatch side

    def lease(
        self,
        queue: str,
        now: float,
        limit: int,
        held: frozenset[int] = frozenset(),
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> asyncio.Future[Lease]:
        """Take up to ``limit`` tasks of ``queue`` due at ``now``, oldest ETA first, but
        none in ``held`` (the ``seq`` of the tasks the caller's attempts hold); await a
        :class:`Lease`. ``loop``: the running loop, if known.

        A lease writes nothing: it lives in the dispatcher's memory for as long as the
        attempt and its record take. The row stays due meanwhile, so a process that stops
        or crashes before recording the outcome leaves it to be delivered again, which
        is at-least-once delivery without a lease to release.
        """

        def run(conn: sqlite3.Connection) -> Lease:
            if held:
                # The held tasks are the oldest due ones: skip them in the index alone,
                # then read only the rows taken.
                due = conn.execute(_DUE, (queue, now, limit + len(held))).fetchall()
                seqs = [seq for (seq,) in due if seq not in held][:limit]
                rows = _rows_in_order(conn, seqs)
            else:
                rows = conn.execute(_LEASE, (queue, now, limit)).fetchall()
            next_due = None
            if len(rows) < limit:
                found = conn.execute(_NEXT_DUE, (queue, now)).fetchone()
                next_due = found[0] if found else None
            return Lease([leased_task(row) for row in rows], next_due)

        return self.writer.submit(run, loop=loop)

    def complete(
        self, task: LeasedTask, *, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[bool]:
        """Delete a task whose attempt succeeded; await whether it was still there (an
        operator may have deleted or purged it meanwhile). The completions of one batch
        are one statement and one counter update per queue; they are lazy writes, gathered
        for up to the writer's ``BOOKKEEPING_GATHER_SECONDS``. ``loop``: the running loop."""
        return self.writer.submit_grouped(self._complete, task, durable=False, lazy=True, loop=loop)

    @staticmethod
    def _complete(conn: sqlite3.Connection, tasks: list[LeasedTask]) -> list[Any]:
        gone: set[int] = set()
        for start in range(0, len(tasks), _IN_CHUNK):
            seqs = [task.seq for task in tasks[start : start + _IN_CHUNK]]
            marks = ",".join("?" * len(seqs))
            sql = f"DELETE FROM tasks WHERE seq IN ({marks}) RETURNING seq"  # noqa: S608
            gone.update(seq for (seq,) in conn.execute(sql, seqs))
        freed: dict[str, list[int]] = {}
        for task in tasks:
            if task.seq in gone:
                counts = freed.setdefault(task.envelope.queue, [0, 0])
                counts[0] += 1
                counts[1] += task.size
        for queue, (count, size) in freed.items():
            bump(conn, queue, -count, -size, 0)
        return [task.seq in gone for task in tasks]

    def retry(self, task: LeasedTask, result: AttemptResult, eta: float) -> asyncio.Future[None]:
        """Record a failed attempt and schedule the next one at ``eta``; await ``None``."""
        first = task.first_attempt_at if task.first_attempt_at is not None else result.started_at

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE tasks SET attempts = attempts + 1, responses = responses + ?,"
                " first_attempt_at = ?, last_status = ?, last_error = ?, eta = ?,"
                " visible_at = ?, leased = 0 WHERE seq = ?",
                (
                    int(result.executed),
                    first,
                    result.status,
                    result.error[:SNIPPET_CHARS],
                    eta,
                    eta,
                    task.seq,
                ),
            )

        return self.writer.submit(run)

    def dead_letter(
        self, task: LeasedTask, result: AttemptResult, now: float
    ) -> asyncio.Future[bool]:
        """Move a task that ran out of attempts to the dead-letter table; await whether it
        was still there."""
        first = task.first_attempt_at if task.first_attempt_at is not None else result.started_at

        def run(conn: sqlite3.Connection) -> bool:
            moved = conn.execute(
                "INSERT INTO dead_letters (seq, id, queue, method, path, query, headers, body,"
                " size, received_at, request_id, attempts, first_attempt_at, last_status,"
                " last_error, died_at) SELECT seq, id, queue, method, path, query, headers,"
                " body, size, received_at, request_id, attempts + 1, ?, ?, ?, ?"
                " FROM tasks WHERE seq = ?",
                (first, result.status, result.error[:SNIPPET_CHARS], now, task.seq),
            ).rowcount
            if moved:
                conn.execute("DELETE FROM tasks WHERE seq = ?", (task.seq,))
                bump(conn, task.envelope.queue, -1, -task.size, 1)
            return bool(moved)

        return self.writer.submit(run)

    def prune_dedup(self, now: float) -> asyncio.Future[int]:
        """Forget Idempotency-Keys older than the de-dup window; await how many."""
        horizon = now - self.dedup_window

        def run(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM dedup WHERE created_at < ?", (horizon,)).rowcount

        return self.writer.submit(run)

    def probe(self) -> asyncio.Future[None]:
        """A durable write that shows the store can persist; await ``None``. Fails at once
        for ``FAILURE_MEMORY`` seconds after a durable batch failed: a small write may
        still fit on a full disk, so the last real failure counts too."""
        failure = self.writer.last_failure
        if failure is not None and time.monotonic() - failure[0] < FAILURE_MEMORY:
            raise EngineUnavailableError(
                f"The task store failed to write {time.monotonic() - failure[0]:.0f}s ago"
                f" ({failure[1]}).",
                retry_after=FAILURE_MEMORY,
            )

        def run(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO counters (queue) VALUES ('')")
            conn.execute("UPDATE counters SET bytes = bytes + 1 WHERE queue = ''")

        return self.writer.submit(run, durable=True)

    # ------------------------------------------------------------ reads

    def read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of a read-only query on the reader connection (blocking)."""
        return self._read(sql, params)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._reader_lock:
            if self._reader is None:
                raise EngineUnavailableError("The task store is closed.")
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise EngineUnavailableError(f"Cannot read the task store: {exc}") from exc

    def counts(self) -> dict[str, QueueCounts]:
        """Counters of every queue (blocking, O(queues))."""
        rows = self._read("SELECT queue, tasks, bytes, dead FROM counters WHERE queue != ''")
        return {row[0]: QueueCounts(*row) for row in rows}

    def oldest_due_at(self, queue: str, now: float) -> float | None:
        """When the task of ``queue`` that has been due longest became due (its schedule
        time: arrival, X-Delay/X-Not-Before, or the retry's; Unix seconds), ``None`` when
        none is due at ``now``. Blocking; one index lookup. A task in flight is still due
        (its lease is in memory); the local Cloud Tasks server's leased rows are not."""
        rows = self._read(
            "SELECT MIN(visible_at) FROM tasks INDEXED BY tasks_due"
            " WHERE queue = ? AND visible_at <= ?",
            (queue, now),
        )
        return None if rows[0][0] is None else float(rows[0][0])

    def scheduled_count(self, queue: str, now: float) -> int:
        """Tasks of ``queue`` not yet due at ``now`` (delayed, or waiting for a retry).
        Blocking; a range of the due-time index, about 50 ns per such task."""
        rows = self._read(
            "SELECT COUNT(*) FROM tasks INDEXED BY tasks_due WHERE queue = ? AND visible_at > ?",
            (queue, now),
        )
        return int(rows[0][0])

    def oldest_received_at(self, queue: str) -> float | None:
        """When the oldest task of ``queue`` not yet completed arrived (Unix seconds),
        ``None`` when there is none. Blocking; one index lookup."""
        rows = self._read(
            "SELECT received_at FROM tasks INDEXED BY tasks_queue WHERE queue = ?"
            " ORDER BY seq LIMIT 1",
            (queue,),
        )
        return float(rows[0][0]) if rows else None

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters of ``queue``, newest first (blocking)."""
        rows = self._read(
            "SELECT id, queue, method, path, query, size, received_at, attempts, last_status,"
            " last_error, died_at FROM dead_letters WHERE queue = ? ORDER BY dl DESC LIMIT ?",
            (queue, limit),
        )
        return [DeadLetter(*row) for row in rows]


def _rows_in_order(conn: sqlite3.Connection, seqs: list[int]) -> list[Any]:
    """The :data:`LEASED_TASK` rows of ``seqs``, in that order (those still there)."""
    if not seqs:
        return []
    marks = ",".join("?" * len(seqs))
    sql = f"{LEASED_TASK} WHERE seq IN ({marks})"
    found = {row[0]: row for row in conn.execute(sql, seqs)}
    return [found[seq] for seq in seqs if seq in found]


def leased_task(row: tuple[Any, ...]) -> LeasedTask:
    """A :class:`LeasedTask` from a row of :data:`LEASED_TASK`."""
    (seq, id_, queue, method, path, query, headers, body, received_at, request_id, eta,
     attempts, responses, first_attempt_at, last_status, size) = row  # fmt: skip
    envelope = Envelope(
        id=id_,
        queue=queue,
        method=method,
        path=path,
        query=query,
        headers=decode_headers(headers),
        body=bytes(body),
        received_at=received_at,
        schedule_time=eta,
        request_id=request_id,
    )
    return LeasedTask(seq, envelope, eta, attempts, responses, first_attempt_at, last_status, size)
