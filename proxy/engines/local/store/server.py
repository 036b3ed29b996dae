"""The local Cloud Tasks server's reads and writes (``ingest-proxy cloudtasks-server``), in
the embedded engine's file beside the engine's tables.

Task bodies, headers, ETAs, attempts and leases stay in the engine's ``tasks`` table (the
engine's dispatcher leases from it); the server's tables (``SERVER_SCHEMA``) add what the
Cloud Tasks API needs:

- ``ct_queues``: one row per queue (full name), its rate limits, retry config, state and
  queue-level ``http_target`` (the serialized message; empty: none).
- ``ct_deleted_queues``: names of deleted queues, blocked for reuse for a while.
- ``ct_tasks``: per task (by ``seq`` of ``tasks``) its full name, URL, OIDC/OAuth token
  request, dispatch deadline and the attempt bookkeeping the Task resource shows.
- ``ct_names``: tombstones of named tasks that completed or were deleted: the name stays
  taken for ``name_block`` seconds (ALREADY_EXISTS).
- ``ct_operations``: long-running operations (BatchCreateTasks), serialized, by name.

Created with ``CREATE TABLE IF NOT EXISTS``; ``ct_meta.version`` is bumped and migrated
here when they change (:data:`SERVER_SCHEMA_VERSION`). The engine's ``user_version`` is
left to the engine. Writes that answer an API call are durable; an attempt's bookkeeping
is not (see ``writer.py``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.engines.local.store.counters import bump, forget
from proxy.engines.local.store.records import AttemptResult, LeasedTask
from proxy.engines.local.store.store import LEASED_TASK, Store, leased_task

# 2: ct_queues.http_target and ct_operations. A version 1 file gets the column (empty: no
# queue-level routing) and the table when it is opened; an earlier server then refuses
# the file instead of dropping the queues' routing.
SERVER_SCHEMA_VERSION = 2
SERVER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ct_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ct_queues (
    name TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    concurrency INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    min_backoff REAL NOT NULL,
    max_backoff REAL NOT NULL,
    max_doublings INTEGER NOT NULL,
    max_retry_duration REAL NOT NULL,
    sampling_ratio REAL NOT NULL,
    state INTEGER NOT NULL,
    purge_time REAL NOT NULL,
    http_target BLOB NOT NULL DEFAULT x''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ct_deleted_queues (
    name TEXT PRIMARY KEY,
    deleted_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ct_tasks (
    seq INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    named INTEGER NOT NULL,
    url TEXT NOT NULL,
    token TEXT,
    dispatch_deadline REAL NOT NULL,
    create_time REAL NOT NULL,
    dispatch_count INTEGER NOT NULL DEFAULT 0,
    response_count INTEGER NOT NULL DEFAULT 0,
    first_dispatch REAL,
    last_schedule REAL,
    last_dispatch REAL,
    last_response REAL,
    last_status INTEGER
);
CREATE INDEX IF NOT EXISTS ct_tasks_queue ON ct_tasks (queue, seq);
CREATE INDEX IF NOT EXISTS ct_tasks_created ON ct_tasks (create_time);
CREATE TABLE IF NOT EXISTS ct_names (
    name TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    until REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ct_names_until ON ct_names (until);
CREATE TABLE IF NOT EXISTS ct_operations (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ct_operations_created ON ct_operations (created);
"""

# A queue row, in the order of the columns (the server's QueueConfig fields).
QUEUE_COLUMNS = (
    "name, rate, concurrency, max_attempts, min_backoff, max_backoff, max_doublings,"
    " max_retry_duration, sampling_ratio, state, purge_time, http_target"
)
_QUEUE_FIELDS = len(QUEUE_COLUMNS.split(","))
# A task as the API shows it: the engine's row joined with ours, in this order.
TASK_COLUMNS = (
    "c.seq, c.name, c.url, t.method, t.headers, t.body, c.token, t.eta, c.create_time,"
    " c.dispatch_deadline, c.dispatch_count, c.response_count, c.first_dispatch,"
    " c.last_schedule, c.last_dispatch, c.last_response, c.last_status"
)
_TASK_SELECT = f"SELECT {TASK_COLUMNS} FROM ct_tasks c JOIN tasks t ON t.seq = c.seq"  # noqa: S608
_INSERT_TASK = (
    "INSERT INTO tasks (id, queue, method, path, query, headers, body, size, received_at,"
    " request_id, eta, visible_at) VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, '', ?, ?)"
)
_INSERT_META = (
    "INSERT INTO ct_tasks (seq, name, queue, named, url, token, dispatch_deadline,"
    " create_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SNIPPET_CHARS = 1024


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated CreateTask: times in Unix seconds, ``token`` the JSON of the token
    request (``None``: no Authorization header)."""

    name: str
    task_id: str
    named: bool
    url: str
    method: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    token: str | None
    dispatch_deadline: float
    schedule_time: float
    create_time: float


@dataclass(frozen=True, slots=True)
class TaskTarget:
    """Where and how an attempt of a task goes: its URL, token request, deadline (s)."""

    url: str
    token: str | None
    dispatch_deadline: float


class ServerStore:
    """The server's operations on ``store``'s file; ``name_block`` is how long (s) the
    name of a named task stays taken after the task is gone."""

    def __init__(self, store: Store, *, name_block: float) -> None:
        self.store = store
        self.name_block = name_block

    # ------------------------------------------------------------ tables

    async def create_tables(self) -> None:
        """Create or upgrade the server's tables."""
        await self.store.writer.submit(_create)

    def queue_rows(self) -> list[tuple[Any, ...]]:
        """Every stored queue as a row in :data:`QUEUE_COLUMNS` order (blocking)."""
        sql = f"SELECT {QUEUE_COLUMNS} FROM ct_queues"  # noqa: S608
        return [tuple(row) for row in self.store.read(sql)]

    def task_count(self) -> int:
        """How many tasks the server holds (blocking)."""
        return int(self.store.read("SELECT COUNT(*) FROM ct_tasks")[0][0])

    async def prune(
        self, now: float, *, queue_block: float, retention: float, operation_retention: float
    ) -> int:
        """Forget name blocks that ran out, deleted queues older than ``queue_block``
        seconds and operations older than ``operation_retention``; delete tasks created more
        than ``retention`` seconds ago. How many tasks were deleted."""

        def run(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM ct_names WHERE until < ?", (now,))
            conn.execute("DELETE FROM ct_deleted_queues WHERE deleted_at < ?", (now - queue_block,))
            conn.execute(
                "DELETE FROM ct_operations WHERE created < ?", (now - operation_retention,)
            )
            old = conn.execute(
                "SELECT seq FROM ct_tasks WHERE create_time < ?", (now - retention,)
            ).fetchall()
            return sum(self._remove(conn, seq, now) for (seq,) in old)

        removed: int = await self.store.writer.submit(run)
        return removed

    # ------------------------------------------------------------ queues

    def deleted_since(self, name: str, since: float) -> bool:
        """Whether the queue ``name`` was deleted after ``since`` (blocking)."""
        sql = "SELECT 1 FROM ct_deleted_queues WHERE name = ? AND deleted_at > ?"
        return bool(self.store.read(sql, (name, since)))

    async def save_queue(self, row: tuple[Any, ...], *, create: bool) -> bool:
        """Store a queue row (:data:`QUEUE_COLUMNS` order); with ``create``, only when no
        queue of that name exists. Whether it was stored."""
        if len(row) != _QUEUE_FIELDS:
            raise ValueError(f"a queue row has {_QUEUE_FIELDS} fields, not {len(row)}")
        verb = "INSERT OR IGNORE" if create else "INSERT OR REPLACE"
        marks = ", ".join("?" * _QUEUE_FIELDS)
        sql = f"{verb} INTO ct_queues ({QUEUE_COLUMNS}) VALUES ({marks})"

        def run(conn: sqlite3.Connection) -> bool:
            return bool(conn.execute(sql, row).rowcount)

        saved: bool = await self.store.writer.submit(run, durable=True)
        return saved

    async def purge_queue(self, queue: str, now: float) -> None:
        """Delete the tasks of ``queue`` created up to ``now``."""
        await self.store.writer.submit(lambda c: self._purge(c, queue, now), durable=True)

    async def delete_queue(self, queue: str, now: float) -> None:
        """Delete ``queue`` with its tasks and counters; its name is remembered as deleted
        at ``now``."""

        def run(conn: sqlite3.Connection) -> None:
            self._purge(conn, queue, now)
            conn.execute("DELETE FROM ct_queues WHERE name = ?", (queue,))
            forget(conn, queue)
            conn.execute("INSERT OR REPLACE INTO ct_deleted_queues VALUES (?, ?)", (queue, now))

        await self.store.writer.submit(run, durable=True)

    # ------------------------------------------------------------ tasks

    async def insert_task(self, queue: str, new: NewTask, now: float) -> int | None:
        """Store ``new`` in ``queue`` (durably) unless its name is taken; its ``seq``, or
        ``None`` when the name is taken (by a task, or by a block until after ``now``)."""
        seq: int | None = await self.store.writer.submit(
            lambda c: self._insert(c, queue, new, now), durable=True
        )
        return seq

    async def insert_batch(
        self,
        queue: str,
        news: list[NewTask],
        now: float,
        operation: str,
        finish: Callable[[list[int | None]], bytes],
    ) -> bytes:
        """BatchCreateTasks: unless an operation called ``operation`` exists, store each
        of ``news`` in ``queue`` as :meth:`insert_task` does and the operation
        ``finish(seqs)`` makes of the outcome (``None`` where a name was taken), in one
        durable transaction. The operation stored under that name (the existing one when
        the name was taken: nothing is inserted then)."""

        def run(conn: sqlite3.Connection) -> bytes:
            found = conn.execute(
                "SELECT body FROM ct_operations WHERE name = ?", (operation,)
            ).fetchone()
            if found is not None:
                return bytes(found[0])
            body = finish([self._insert(conn, queue, new, now) for new in news])
            conn.execute("INSERT INTO ct_operations VALUES (?, ?, ?)", (operation, now, body))
            return body

        stored: bytes = await self.store.writer.submit(run, durable=True)
        return stored

    async def operation(self, name: str) -> bytes | None:
        """The serialized operation called ``name``, if it is (still) kept."""
        sql = "SELECT body FROM ct_operations WHERE name = ?"
        rows = await asyncio.to_thread(self.store.read, sql, (name,))
        return bytes(rows[0][0]) if rows else None

    async def task_by_name(self, name: str) -> tuple[Any, ...] | None:
        """The task named ``name`` as a row in :data:`TASK_COLUMNS` order, if it exists."""
        rows = await asyncio.to_thread(self.store.read, f"{_TASK_SELECT} WHERE c.name = ?", (name,))
        return tuple(rows[0]) if rows else None

    async def task_page(self, queue: str, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` tasks of ``queue`` created after the one whose ``seq`` is
        ``after``, oldest first (rows in :data:`TASK_COLUMNS` order)."""
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_TASK_SELECT} WHERE c.queue = ? AND c.seq > ? ORDER BY c.seq LIMIT ?",
            (queue, after, limit),
        )
        return [tuple(row) for row in rows]

    async def leased_task(self, seq: int) -> LeasedTask | None:
        """The task ``seq`` as the dispatcher attempts it, if it is still there."""
        rows = await asyncio.to_thread(self.store.read, f"{LEASED_TASK} WHERE seq = ?", (seq,))
        return leased_task(tuple(rows[0])) if rows else None

    async def task_target(self, seq: int) -> TaskTarget | None:
        """The URL, token request and deadline of task ``seq``, if it is still there."""
        sql = "SELECT url, token, dispatch_deadline FROM ct_tasks WHERE seq = ?"
        rows = await asyncio.to_thread(self.store.read, sql, (seq,))
        if not rows:
            return None
        url, token, deadline = rows[0]
        return TaskTarget(str(url), token, float(deadline))

    async def delete_task(self, seq: int, now: float) -> bool:
        """Delete task ``seq`` (durably); a named task's name stays taken. Whether it was
        still there."""
        deleted: bool = await self.store.writer.submit(
            lambda c: self._remove(c, seq, now), durable=True
        )
        return deleted

    def task_done(self, seq: int, now: float) -> asyncio.Future[bool]:
        """Delete task ``seq``, whose attempt succeeded at ``now``."""
        return self.store.writer.submit(lambda c: self._remove(c, seq, now))

    def attempt_started(
        self, task: LeasedTask, now: float, lease_until: float | None
    ) -> asyncio.Future[None]:
        """Count an attempt of ``task`` starting at ``now``; with ``lease_until``, lease
        the task until then (RunTask: the dispatcher did not lease it)."""

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE ct_tasks SET dispatch_count = dispatch_count + 1,"
                " first_dispatch = COALESCE(first_dispatch, ?), last_schedule = ?,"
                " last_dispatch = ?, last_response = NULL, last_status = NULL WHERE seq = ?",
                (now, task.eta, now, task.seq),
            )
            if lease_until is not None:
                conn.execute(
                    "UPDATE tasks SET visible_at = ?, leased = 1 WHERE seq = ?",
                    (lease_until, task.seq),
                )

        return self.store.writer.submit(run)

    def attempt_failed(
        self,
        task: LeasedTask,
        result: AttemptResult,
        status: int,
        now: float,
        eta: float | None,
    ) -> asyncio.Future[None]:
        """Record a failed attempt of ``task`` (``status``: the HTTP status, or the
        server's code for no answer) and schedule the next at ``eta``; delete the task
        when ``eta`` is ``None`` (out of retries)."""
        first = task.first_attempt_at if task.first_attempt_at is not None else result.started_at
        answered = result.status is not None

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE ct_tasks SET response_count = response_count + ?, last_response = ?,"
                " last_status = ? WHERE seq = ?",
                (int(answered), now if answered else None, status, task.seq),
            )
            if eta is None:
                self._remove(conn, task.seq, now)
                return
            conn.execute(
                "UPDATE tasks SET attempts = attempts + 1, responses = responses + ?,"
                " first_attempt_at = ?, last_status = ?, last_error = ?, eta = ?,"
                " visible_at = ?, leased = 0 WHERE seq = ?",
                (int(result.executed), first, result.status, result.error[:SNIPPET_CHARS],
                 eta, eta, task.seq),
            )  # fmt: skip

        return self.store.writer.submit(run)

    # ------------------------------------------------------------ statements

    def _insert(self, conn: sqlite3.Connection, queue: str, new: NewTask, now: float) -> int | None:
        if new.named and (
            conn.execute("SELECT 1 FROM ct_tasks WHERE name = ?", (new.name,)).fetchone()
            or conn.execute(
                "SELECT 1 FROM ct_names WHERE name = ? AND until > ?", (new.name, now)
            ).fetchone()
        ):
            return None
        size = len(new.body)
        cursor = conn.execute(
            _INSERT_TASK,
            (new.task_id, queue, new.method, new.url, json.dumps(new.headers), new.body,
             size, new.create_time, new.schedule_time, new.schedule_time),
        )  # fmt: skip
        conn.execute(
            _INSERT_META,
            (cursor.lastrowid, new.name, queue, int(new.named), new.url, new.token,
             new.dispatch_deadline, new.create_time),
        )  # fmt: skip
        bump(conn, queue, 1, size)
        return cursor.lastrowid

    def _remove(self, conn: sqlite3.Connection, seq: int, now: float) -> bool:
        row = conn.execute(
            "SELECT c.name, c.queue, c.named, t.size FROM ct_tasks c JOIN tasks t"
            " ON t.seq = c.seq WHERE c.seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            return False
        name, queue, named, size = row
        conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))
        conn.execute("DELETE FROM ct_tasks WHERE seq = ?", (seq,))
        if named:
            conn.execute(
                "INSERT OR REPLACE INTO ct_names VALUES (?, ?, ?)",
                (name, queue, now + self.name_block),
            )
        bump(conn, queue, -1, -int(size))
        return True

    def _purge(self, conn: sqlite3.Connection, queue: str, now: float) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO ct_names SELECT name, queue, ? FROM ct_tasks"
            " WHERE queue = ? AND named = 1 AND create_time <= ?",
            (now + self.name_block, queue, now),
        )
        count, size = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(t.size), 0) FROM ct_tasks c JOIN tasks t"
            " ON t.seq = c.seq WHERE c.queue = ? AND c.create_time <= ?",
            (queue, now),
        ).fetchone()
        conn.execute(
            "DELETE FROM tasks WHERE seq IN (SELECT seq FROM ct_tasks WHERE queue = ?"
            " AND create_time <= ?)",
            (queue, now),
        )
        conn.execute("DELETE FROM ct_tasks WHERE queue = ? AND create_time <= ?", (queue, now))
        bump(conn, queue, -int(count), -int(size))


def _create(conn: sqlite3.Connection) -> None:
    for statement in SERVER_SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    row = conn.execute("SELECT value FROM ct_meta WHERE key = 'version'").fetchone()
    if row is not None and int(row[0]) > SERVER_SCHEMA_VERSION:
        raise sqlite3.OperationalError(
            f"the file was written by a newer local Cloud Tasks server (tables {row[0]})"
        )
    columns = {column[1] for column in conn.execute("PRAGMA table_info(ct_queues)")}
    if "http_target" not in columns:  # a version 1 file
        conn.execute("ALTER TABLE ct_queues ADD COLUMN http_target BLOB NOT NULL DEFAULT x''")
    conn.execute(
        "INSERT OR REPLACE INTO ct_meta VALUES ('version', ?)", (str(SERVER_SCHEMA_VERSION),)
    )
