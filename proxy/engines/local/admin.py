"""QueueAdmin for the embedded engine, mixed into :class:`LocalEngine`.

Pause state lives in the database, so a paused queue stays paused across restarts.
Purging or deleting a task that is in flight lets that attempt finish but discards its
outcome. Looking a task up by id scans the queue's rows (there is no index on task ids,
which would slow every enqueue): fine for an operator, not for a hot path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

from proxy.config import Settings
from proxy.engines.admin import DeadLetterInfo, Page, QueueInfo, TaskInfo
from proxy.engines.local.dispatcher import Dispatcher
from proxy.engines.local.header_codec import decode_headers
from proxy.engines.local.store import Store
from proxy.errors import BadRequestError, NotFoundError

_TASK = (
    "SELECT seq, id, queue, method, path, query, received_at, eta, attempts, responses,"
    " last_status, size, headers, body, visible_at FROM tasks"
)
_DEAD = (
    "SELECT dl, id, queue, method, path, query, received_at, died_at, attempts, last_status,"
    " last_error, size FROM dead_letters"
)


class LocalAdmin:
    """The QueueAdmin operations; the engine provides store, dispatchers and counters."""

    settings: Settings
    store: Store
    dispatchers: dict[str, Dispatcher]

    def _adjust(self, queue: str, tasks: int, size: int, dead: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _queue_infos(self) -> list[QueueInfo]:  # pragma: no cover - the engine's
        raise NotImplementedError

    def _check(self, queue: str) -> Dispatcher:
        dispatcher = self.dispatchers.get(queue)
        if dispatcher is None:
            raise NotFoundError(f"No queue is named {queue!r}.")
        return dispatcher

    async def list_queues(self) -> list[QueueInfo]:
        """Every configured queue with its depth, oldest age, rates and state."""
        return await asyncio.to_thread(self._queue_infos)

    async def pause_queue(self, queue: str) -> QueueInfo:
        """Stop starting attempts on ``queue`` (kept across restarts); 202s go on."""
        return await self._set_paused(queue, True)

    async def resume_queue(self, queue: str) -> QueueInfo:
        """Start attempts on ``queue`` again."""
        return await self._set_paused(queue, False)

    async def _set_paused(self, queue: str, paused: bool) -> QueueInfo:
        dispatcher = self._check(queue)
        if paused:
            sql = "INSERT OR IGNORE INTO paused VALUES (?)"
        else:
            sql = "DELETE FROM paused WHERE queue = ?"
        await self.store.writer.submit(lambda c: c.execute(sql, (queue,)) and None, durable=True)
        dispatcher.set_paused(paused)
        return next(q for q in await self.list_queues() if q.name == queue)

    async def purge_queue(self, queue: str) -> int | None:
        """Delete every task of ``queue`` (attempts in flight finish, unrecorded)."""
        self._check(queue)

        def run(conn: sqlite3.Connection) -> tuple[int, int]:
            count, size = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM tasks WHERE queue = ?", (queue,)
            ).fetchone()
            conn.execute("DELETE FROM tasks WHERE queue = ?", (queue,))
            conn.execute(
                "UPDATE counters SET tasks = tasks - ?, bytes = bytes - ? WHERE queue = ?",
                (count, size, queue),
            )
            return int(count), int(size)

        count, size = await self.store.writer.submit(run, durable=True)
        self._adjust(queue, -count, -size, 0)
        return count

    async def list_tasks(
        self, queue: str, *, limit: int, cursor: str | None, full: bool = False
    ) -> Page[TaskInfo]:
        """Tasks of ``queue`` in the order they become due; ``cursor`` from the last page."""
        self._check(queue)
        after_time, after_seq = _cursor(cursor) if cursor else (-1.0, -1)
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_TASK} INDEXED BY tasks_due WHERE queue = ? AND (visible_at, seq) > (?, ?)"
            " ORDER BY visible_at, seq LIMIT ?",
            (queue, after_time, after_seq, limit + 1),
        )
        items = [_task(row, full) for row in rows[:limit]]
        more = len(rows) > limit
        last = rows[limit - 1] if more else None
        return Page(items, f"{last[14]!r}:{last[0]}" if last else None)

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task with its headers and body."""
        return _task(await self._find(queue, task_id), True)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is waiting or in flight."""
        row = await self._find(queue, task_id)

        def run(conn: sqlite3.Connection) -> bool:
            if conn.execute("DELETE FROM tasks WHERE seq = ?", (row[0],)).rowcount:
                conn.execute(
                    "UPDATE counters SET tasks = tasks - 1, bytes = bytes - ? WHERE queue = ?",
                    (row[11], queue),
                )
                return True
            return False

        if not await self.store.writer.submit(run, durable=True):
            raise NotFoundError(f"Task {task_id!r} of queue {queue!r} just finished.")
        self._adjust(queue, -1, -int(row[11]), 0)

    async def _find(self, queue: str, task_id: str) -> Any:
        self._check(queue)
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_TASK} INDEXED BY tasks_queue WHERE queue = ? AND id = ? LIMIT 1",
            (queue, task_id),
        )
        if not rows:
            raise NotFoundError(f"Queue {queue!r} has no task {task_id!r}.")
        return rows[0]

    async def list_dead_letters(
        self, queue: str, *, limit: int, cursor: str | None
    ) -> Page[DeadLetterInfo]:
        """Dead letters of ``queue``, newest first."""
        self._check(queue)
        before = _int_cursor(cursor) if cursor else 2**62
        rows = await asyncio.to_thread(
            self.store.read,
            f"{_DEAD} WHERE queue = ? AND dl < ? ORDER BY dl DESC LIMIT ?",
            (queue, before, limit + 1),
        )
        items = [_dead(row) for row in rows[:limit]]
        return Page(items, str(rows[limit - 1][0]) if len(rows) > limit else None)

    async def replay_dead_letter(self, queue: str, task_id: str) -> None:
        """Put one dead letter back on its queue, due now, with a fresh attempt count."""
        if not await self._replay(queue, task_id):
            raise NotFoundError(f"Queue {queue!r} has no dead letter {task_id!r}.")

    async def replay_dead_letters(self, queue: str) -> int:
        """Replay every dead letter of ``queue``; return how many."""
        return await self._replay(queue, None)

    async def _replay(self, queue: str, task_id: str | None) -> int:
        dispatcher = self._check(queue)
        now = self.store.clock()
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
            conn.execute(
                "UPDATE counters SET tasks = tasks + ?, bytes = bytes + ?, dead = dead - ?"
                " WHERE queue = ?",
                (count, size, count, queue),
            )
            return int(count), int(size)

        count, size = await self.store.writer.submit(run, durable=True)
        self._adjust(queue, count, size, -count)
        if count:
            dispatcher.notify()
        return count

    async def drop_dead_letter(self, queue: str, task_id: str) -> None:
        """Delete one dead letter for good."""
        self._check(queue)

        def run(conn: sqlite3.Connection) -> int:
            dropped = conn.execute(
                "DELETE FROM dead_letters WHERE queue = ? AND id = ?", (queue, task_id)
            ).rowcount
            conn.execute("UPDATE counters SET dead = dead - ? WHERE queue = ?", (dropped, queue))
            return int(dropped)

        dropped = await self.store.writer.submit(run, durable=True)
        if not dropped:
            raise NotFoundError(f"Queue {queue!r} has no dead letter {task_id!r}.")
        self._adjust(queue, 0, 0, -dropped)


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
