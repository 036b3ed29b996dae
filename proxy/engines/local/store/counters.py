"""The per-queue counters (tasks, body bytes, dead letters): changed here and nowhere else,
always inside the transaction that changes the rows they count, so reading them is O(1)
and they are never out of step with the tables."""

from __future__ import annotations

import sqlite3


def bump(conn: sqlite3.Connection, queue: str, tasks: int, size: int, dead: int = 0) -> None:
    """Add ``tasks`` tasks, ``size`` body bytes and ``dead`` dead letters (any may be
    negative) to ``queue``'s counters; a writer job's statement."""
    updated = conn.execute(
        "UPDATE counters SET tasks = tasks + ?, bytes = bytes + ?, dead = dead + ? WHERE queue = ?",
        (tasks, size, dead, queue),
    ).rowcount
    if not updated:
        conn.execute(
            "INSERT INTO counters (queue, tasks, bytes, dead) VALUES (?, ?, ?, ?)",
            (queue, tasks, size, dead),
        )


def forget(conn: sqlite3.Connection, queue: str) -> None:
    """Drop ``queue``'s counters (the queue is deleted, with its tasks)."""
    conn.execute("DELETE FROM counters WHERE queue = ?", (queue,))
