"""The admin API's reads and writes on the embedded engine's tables: paused queues,
purges, task and dead-letter pages, deleting, replaying and dropping.

Every write is durable (an operator's action is answered only once it is on disk) and
keeps the counters in the same transaction (``counters.bump``). Looking a task up by id
scans its queue's rows: there is no index on task ids, which would slow every enqueue.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from proxy.engines.admin import DeadLetterInfo, Page, TaskInfo
from proxy.engines.local.store.counters import bump
from proxy.engines.local.store.header_codec import decode_headers
from proxy.engines.local.store.store import Store
from proxy.errors import BadRequestError

_TASK = (
    "SELECT seq, id, queue, method, path, query, received_at, eta, attempts, responses,"
    " last_status, size, headers, body, visible_at FROM tasks"
)
_DEAD = (
    "SELECT dl, id, queue, method, path, query, received_at, died_at, attempts, last_status,"
    " last_error, size FROM dead_letters"
)


class FoundTask:
    """A task looked up by id: what the admin API shows, and what deleting it needs."""

    __slots__ = ("info", "seq", "size")

    def __init__(self, row: Any) -> None:
        self.seq = int(row[0])
        self.size = int(row[11])
        self.info = _task(row, True)


class AdminStore:
    """The admin operations on ``store``'s file (same writer, same reader)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def paused_queues(self) -> list[str]:
        """The queues an operator paused (blocking)."""
        return [name for (name,) in self.store.read("SELECT queue FROM paused")]

    async def set_paused(self, queue: str, paused: bool) -> None:
        """Record ``queue`` as paused or not (kept across restarts)."""
        if paused:
            sql = "INSERT OR IGNORE INTO paused VALUES (?)"
        else:
            sql = "DELETE FROM paused WHERE queue = ?"
        await self.store.writer.submit(lambda c: c.execute(sql, (queue,)) and None, durable=True)

    async def purge(self, queue: str) -> tuple[int, int]:
        """Delete every task of ``queue``; the number of tasks and body bytes deleted."""

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            count, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM tasks WHERE queue = ?", (queue,)
            ).fetchone()
            conn.execute("DELETE FROM tasks WHERE queue = ?", (queue,))
            bump(conn, queue, -int(count), -int(size))
            return int(count), int(size)

        result: tuple[int, int] = await self.store.writer.submit(run, durable=True)
        return result

    async def task_page(
        self, queue: str, cursor: str | None, limit: int, full: bool
    ) -> Page[TaskInfo]:
        """Tasks of ``queue`` in the order they become due, after ``cursor`` (from the
        page before); headers and bodies when ``full``."""
        after_time, after_seq = _cursor(cursor) if cursor else (-1.0, -1)
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_TASK} INDEXED BY tasks_due WHERE queue = ? AND (visible_at, seq) > (?, ?)"
            " ORDER BY visible_at, seq LIMIT ?",
            (queue, after_time, after_seq, limit + 1),
        )
        items = [_task(row, full) for row in rows[:limit]]
        last = rows[limit - 1] if len(rows) > limit else None
        return Page(items, f"{last[14]!r}:{last[0]}" if last else None)

    async def find_task(self, queue: str, task_id: str) -> FoundTask | None:
        """The task ``task_id`` of ``queue`` with its headers and body, if it is there."""
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_TASK} INDEXED BY tasks_queue WHERE queue = ? AND id = ? LIMIT 1",
            (queue, task_id),
        )
        return FoundTask(rows[0]) if rows else None

    async def delete_task(self, queue: str, found: FoundTask) -> bool:
        """Delete a task found by :meth:`find_task`; False when it finished meanwhile."""

        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM tasks WHERE seq = ?", (found.seq,)).rowcount:
                bump(conn, queue, -1, -found.size)
                return True
            return False

        deleted: bool = await self.store.writer.submit(run, durable=True)
        return deleted

    async def dead_letter_page(
        self, queue: str, cursor: str | None, limit: int
    ) -> Page[DeadLetterInfo]:
        """Dead letters of ``queue``, newest first, after ``cursor``."""
        before = _int_cursor(cursor) if cursor else 2**62
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_DEAD} WHERE queue = ? AND dl < ? ORDER BY dl DESC LIMIT ?",
            (queue, before, limit + 1),
        )
        items = [_dead(row) for row in rows[:limit]]
        return Page(items, str(rows[limit - 1][0]) if len(rows) > limit else None)

    async def replay(self, queue: str, task_id: str | None, now: float) -> tuple[int, int]:
        """Put the dead letter ``task_id`` of ``queue`` (every one when ``None``) back on
        the queue, due at ``now`` with a fresh attempt count; the number of tasks and body
        bytes replayed."""
        params = (queue, task_id)  # a None id matches every dead letter of the queue

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            count, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead_letters"
                " WHERE queue = ? AND id = COALESCE(?, id)",
                params,
            ).fetchone()
            conn.execute(
                "INSERT INTO tasks (id, queue, method, path, query, headers, body, size,"
                " received_at, request_id, eta, visible_at) SELECT id, queue, method, path,"
                " query, headers, body, size, received_at, request_id, ?, ? FROM dead_letters"
                " WHERE queue = ? AND id = COALESCE(?, id) ORDER BY dl",
                (now, now, *params),
            )
            conn.execute(
                "DELETE FROM dead_letters WHERE queue = ? AND id = COALESCE(?, id)", params
            )
            bump(conn, queue, int(count), int(size), -int(count))
            return int(count), int(size)

        result: tuple[int, int] = await self.store.writer.submit(run, durable=True)
        return result

    async def drop_dead_letter(self, queue: str, task_id: str) -> int:
        """Delete the dead letter ``task_id`` of ``queue`` for good; how many went (0/1)."""

        def run(conn: sqlite3.Connection) -> int:
            dropped = int(
                conn.execute(
                    "DELETE FROM dead_letters WHERE queue = ? AND id = ?", (queue, task_id)
                ).rowcount
            )
            bump(conn, queue, 0, 0, -dropped)
            return dropped

        dropped: int = await self.store.writer.submit(run, durable=True)
        return dropped


def _cursor(cursor: str) -> tuple[float, int]:
    try:
        when, _, seq = cursor.partition(":")
        return float(when), int(seq)
    except ValueError:
        raise BadRequestError("The cursor is not one this API returned.") from None


def _int_cursor(cursor: str) -> int:
    try:
        return int(cursor)
    except ValueError:
        raise BadRequestError("The cursor is not one this API returned.") from None


def _task(row: Any, full: bool) -> TaskInfo:
    (_, id_, queue, method, path, query, received_at, eta, attempts, responses, last_status,
     size, headers, body, _) = row  # fmt: skip
    return TaskInfo(
        id=id_,
        queue=queue,
        method=method,
        path=path,
        query=query,
        created_at=received_at,
        schedule_time=eta,
        dispatch_count=attempts,
        response_count=responses,
        last_status=last_status,
        body_bytes=size,
        headers=decode_headers(headers) if full else None,
        body=bytes(body) if full else None,
    )


def _dead(row: Any) -> DeadLetterInfo:
    (_, id_, queue, method, path, query, received_at, died_at, attempts, last_status,
     last_error, size) = row  # fmt: skip
    return DeadLetterInfo(
        id=id_,
        queue=queue,
        method=method,
        path=path,
        query=query,
        created_at=received_at,
        failed_at=died_at,
        attempts=attempts,
        last_status=last_status,
        last_error=None if last_status is not None else last_error,
        response_snippet=last_error if last_status is not None else None,
        body_bytes=size,
    )
