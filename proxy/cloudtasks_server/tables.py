"""The server's own tables, beside the embedded engine's in the same SQLite file.

Task bodies, headers, ETAs, attempts and leases stay in the engine's ``tasks`` table (the
engine's dispatcher leases from it); these tables add what the Cloud Tasks API needs:

- ``ct_queues``: one row per queue (full name), its rate limits, retry config, state.
- ``ct_deleted_queues``: names of deleted queues, blocked for reuse for 7 days.
- ``ct_tasks``: per task (by ``seq`` of ``tasks``) its full name, URL, OIDC/OAuth token
  request, dispatch deadline and the attempt bookkeeping the Task resource shows.
- ``ct_names``: tombstones of named tasks that completed or were deleted: the name stays
  taken for an hour (ALREADY_EXISTS).

Created with ``CREATE TABLE IF NOT EXISTS``; ``ct_meta.version`` is bumped and migrated
here when they change. The engine's ``user_version`` is left to the engine.
"""

from __future__ import annotations

import sqlite3

from proxy.cloudtasks_server.validation import TASK_NAME_BLOCK

VERSION = 1
SCHEMA = """
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
    purge_time REAL NOT NULL
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
"""

QUEUE_COLUMNS = (
    "name, rate, concurrency, max_attempts, min_backoff, max_backoff, max_doublings,"
    " max_retry_duration, sampling_ratio, state, purge_time"
)
# A task as the API shows it: the engine's row joined with ours.
TASK_SELECT = (
    "SELECT c.seq, c.name, c.url, t.method, t.headers, t.body, c.token, t.eta,"
    " c.create_time, c.dispatch_deadline, c.dispatch_count, c.response_count,"
    " c.first_dispatch, c.last_schedule, c.last_dispatch, c.last_response, c.last_status"
    " FROM ct_tasks c JOIN tasks t ON t.seq = c.seq"
)


def create(conn: sqlite3.Connection) -> None:
    """Create or upgrade the tables (a writer job: inside the writer's transaction)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    row = conn.execute("SELECT value FROM ct_meta WHERE key = 'version'").fetchone()
    if row is not None and int(row[0]) > VERSION:
        raise sqlite3.OperationalError(
            f"the file was written by a newer local Cloud Tasks server (tables {row[0]})"
        )
    conn.execute("INSERT OR REPLACE INTO ct_meta VALUES ('version', ?)", (str(VERSION),))


def bump(conn: sqlite3.Connection, queue: str, tasks: int, size: int) -> None:
    """Keep the engine's per-queue counters true (same transaction as the rows)."""
    updated = conn.execute(
        "UPDATE counters SET tasks = tasks + ?, bytes = bytes + ? WHERE queue = ?",
        (tasks, size, queue),
    ).rowcount
    if not updated:
        conn.execute(
            "INSERT INTO counters (queue, tasks, bytes, dead) VALUES (?, ?, ?, 0)",
            (queue, tasks, size),
        )


def remove_task(conn: sqlite3.Connection, seq: int, now: float) -> bool:
    """Delete one task from both tables; a named task's name stays taken for an hour.
    Returns whether it was still there."""
    row = conn.execute(
        "SELECT c.name, c.queue, c.named, t.size FROM ct_tasks c JOIN tasks t ON t.seq = c.seq"
        " WHERE c.seq = ?",
        (seq,),
    ).fetchone()
    if row is None:
        return False
    name, queue, named, size = row
    conn.execute("DELETE FROM tasks WHERE seq = ?", (seq,))
    conn.execute("DELETE FROM ct_tasks WHERE seq = ?", (seq,))
    if named:
        conn.execute(
            "INSERT OR REPLACE INTO ct_names VALUES (?, ?, ?)", (name, queue, now + TASK_NAME_BLOCK)
        )
    bump(conn, queue, -1, -int(size))
    return True
