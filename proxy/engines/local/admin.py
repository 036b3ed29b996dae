"""QueueAdmin for the embedded engine, mixed into :class:`LocalEngine`.

Pause state lives in the database, so a paused queue stays paused across restarts.
Purging or deleting a task that is in flight lets that attempt finish but discards its
outcome. The statements are the store's (``store/admin.py``); this module checks the
queue, keeps the engine's in-memory counters and wakes its dispatchers.
"""

from __future__ import annotations

import asyncio

from proxy.config.settings import Settings
from proxy.engines.admin import DeadLetterInfo, Page, QueueInfo, TaskInfo
from proxy.engines.local.dispatcher import Dispatcher
from proxy.engines.local.store.admin import AdminStore, FoundTask
from proxy.engines.local.store.store import Store
from proxy.errors import NotFoundError


class LocalAdmin:
    """The QueueAdmin operations; the engine provides store, dispatchers and counters."""

    settings: Settings
    store: Store
    admin_store: AdminStore
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
        await self.admin_store.set_paused(queue, paused)
        dispatcher.set_paused(paused)
        return next(q for q in await self.list_queues() if q.name == queue)

    async def purge_queue(self, queue: str) -> int | None:
        """Delete every task of ``queue`` (attempts in flight finish, unrecorded)."""
        self._check(queue)
        count, size = await self.admin_store.purge(queue)
        self._adjust(queue, -count, -size, 0)
        return count

    async def list_tasks(
        self, queue: str, *, limit: int, cursor: str | None, full: bool = False
    ) -> Page[TaskInfo]:
        """Tasks of ``queue`` in the order they become due; ``cursor`` from the last page."""
        self._check(queue)
        return await self.admin_store.task_page(queue, cursor, limit, full)

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task with its headers and body."""
        return (await self._find(queue, task_id)).info

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is waiting or in flight."""
        found = await self._find(queue, task_id)
        if not await self.admin_store.delete_task(queue, found):
            raise NotFoundError(f"Task {task_id!r} of queue {queue!r} just finished.")
        self._adjust(queue, -1, -found.size, 0)

    async def _find(self, queue: str, task_id: str) -> FoundTask:
        self._check(queue)
        found = await self.admin_store.find_task(queue, task_id)
        if found is None:
            raise NotFoundError(f"Queue {queue!r} has no task {task_id!r}.")
        return found

    async def list_dead_letters(
        self, queue: str, *, limit: int, cursor: str | None
    ) -> Page[DeadLetterInfo]:
        """Dead letters of ``queue``, newest first."""
        self._check(queue)
        return await self.admin_store.dead_letter_page(queue, cursor, limit)

    async def replay_dead_letter(self, queue: str, task_id: str) -> None:
        """Put one dead letter back on its queue, due now, with a fresh attempt count."""
        if not await self._replay(queue, task_id):
            raise NotFoundError(f"Queue {queue!r} has no dead letter {task_id!r}.")

    async def replay_dead_letters(self, queue: str) -> int:
        """Replay every dead letter of ``queue``; return how many."""
        return await self._replay(queue, None)

    async def _replay(self, queue: str, task_id: str | None) -> int:
        dispatcher = self._check(queue)
        count, size = await self.admin_store.replay(queue, task_id, self.store.clock())
        self._adjust(queue, count, size, -count)
        if count:
            dispatcher.notify()
        return count

    async def drop_dead_letter(self, queue: str, task_id: str) -> None:
        """Delete one dead letter for good."""
        self._check(queue)
        dropped = await self.admin_store.drop_dead_letter(queue, task_id)
        if not dropped:
            raise NotFoundError(f"Queue {queue!r} has no dead letter {task_id!r}.")
        self._adjust(queue, 0, 0, -dropped)
