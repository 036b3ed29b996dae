"""QueueAdmin over the Cloud Tasks API, mixed into :class:`CloudTasksEngine`.

Cloud Tasks can pause, resume and purge queues and list, show and delete tasks. It has no
dead-letter queue (a task out of attempts is deleted): for a queue in relay mode the
dead-letter calls work on its companion queue (``dead_letters.py``); for any other they
answer 501 with the reason. It reports no queue depth through the v2 API: those fields
stay empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import urlsplit

from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2 import (
    CloudTasksAsyncClient,
    DeleteTaskRequest,
    GetQueueRequest,
    GetTaskRequest,
    ListTasksRequest,
    PauseQueueRequest,
    PurgeQueueRequest,
    Queue,
    ResumeQueueRequest,
    Task,
)

from proxy.config.settings import Settings
from proxy.engines.admin import DeadLetterInfo, Page, QueueInfo, QueueState, TaskInfo
from proxy.engines.cloudtasks.dead_letters import DeadLetters
from proxy.engines.cloudtasks.errors import admin_error
from proxy.engines.cloudtasks.request import QueueTarget
from proxy.errors import NotSupportedError

T = TypeVar("T")
ADMIN_TIMEOUT = 30.0
NO_DEAD_LETTERS = (
    "Cloud Tasks has no dead-letter queue: a task that runs out of attempts is deleted. "
    "Turn on relay mode for this queue (cloudtasks.relay), which keeps them in "
    "<queue>-dead-letters, or use the embedded engine."
)
_STATES: dict[int, QueueState] = {
    Queue.State.RUNNING: "running",
    Queue.State.PAUSED: "paused",
    Queue.State.DISABLED: "disabled",
}


class CloudTasksAdmin:
    """The QueueAdmin operations; the engine provides the client and the queue paths."""

    _settings: Settings
    _targets: dict[str, QueueTarget]

    def _started_client(self) -> CloudTasksAsyncClient:  # pragma: no cover - the engine's
        raise NotImplementedError

    async def _call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await call()
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            raise admin_error(what, exc) from exc

    def _path(self, queue: str) -> str:
        return self._targets[queue].path

    def _queue_info(self, name: str, queue: Queue) -> QueueInfo:
        settings = self._settings.queue(name)
        limits = queue.rate_limits
        return QueueInfo(
            name=name,
            state=_STATES.get(int(queue.state), "running"),
            target=settings.target,
            rate=float(limits.max_dispatches_per_second or settings.rate),
            burst=int(limits.max_burst_size or settings.effective_burst),
            concurrency=int(limits.max_concurrent_dispatches or settings.concurrency),
        )

    def _task_info(self, queue: str, task: Task, *, full: bool) -> TaskInfo:
        request = task.http_request
        url = urlsplit(request.url)
        base = urlsplit(self._settings.queue(queue).target).path.rstrip("/")
        relay_base = self._targets[queue].relay_base
        if relay_base is not None:  # relay mode: the task's URL is the relay's
            base = urlsplit(relay_base).path.rstrip("/")
        path = url.path[len(base) :] if base and url.path.startswith(base) else url.path
        return TaskInfo(
            id=task.name.rsplit("/", 1)[-1],
            queue=queue,
            method=request.http_method.name,
            path=path or "/",
            query=url.query,
            created_at=task.create_time.timestamp() if task.create_time else 0.0,
            schedule_time=task.schedule_time.timestamp() if task.schedule_time else 0.0,
            dispatch_count=int(task.dispatch_count),
            response_count=int(task.response_count),
            body_bytes=len(request.body),
            headers=tuple(sorted(request.headers.items())) if full else None,
            body=bytes(request.body) if full else None,
        )

    async def list_queues(self) -> list[QueueInfo]:
        """Every configured queue as Cloud Tasks reports it (state and rate limits; for a
        relay-mode queue, also how many dead letters its ``<queue>-dead-letters`` holds)."""
        client = self._started_client()
        infos = []
        for name in self._targets:
            queue = await self._call(
                f"Queue {name}",
                lambda n=name: client.get_queue(  # type: ignore[misc]
                    request=GetQueueRequest(name=self._path(n)), timeout=ADMIN_TIMEOUT
                ),
            )
            info = self._queue_info(name, queue)
            target = self._targets[name]
            if target.relay_base is not None:  # relay mode keeps dead letters: count them
                count = await self._call(
                    f"Dead letters of {name}",
                    lambda t=target: DeadLetters(client).count(t),  # type: ignore[misc]
                )
                info = dataclasses.replace(info, dead_letters=count)
            infos.append(info)
        return infos

    async def pause_queue(self, queue: str) -> QueueInfo:
        """PauseQueue: dispatch stops, tasks can still be added."""
        client = self._started_client()
        request = PauseQueueRequest(name=self._path(queue))
        result = await self._call(
            f"Queue {queue}", lambda: client.pause_queue(request=request, timeout=ADMIN_TIMEOUT)
        )
        return self._queue_info(queue, result)

    async def resume_queue(self, queue: str) -> QueueInfo:
        """ResumeQueue."""
        client = self._started_client()
        request = ResumeQueueRequest(name=self._path(queue))
        result = await self._call(
            f"Queue {queue}", lambda: client.resume_queue(request=request, timeout=ADMIN_TIMEOUT)
        )
        return self._queue_info(queue, result)

    async def purge_queue(self, queue: str) -> int | None:
        """PurgeQueue (takes up to a minute in Cloud Tasks; the count is not reported)."""
        client = self._started_client()
        request = PurgeQueueRequest(name=self._path(queue))
        await self._call(
            f"Queue {queue}", lambda: client.purge_queue(request=request, timeout=ADMIN_TIMEOUT)
        )
        return None

    async def list_tasks(
        self, queue: str, *, limit: int, cursor: str | None, full: bool = False
    ) -> Page[TaskInfo]:
        """ListTasks, one page (BASIC or FULL view)."""
        client = self._started_client()
        view = Task.View.FULL if full else Task.View.BASIC
        request = ListTasksRequest(
            parent=self._path(queue), page_size=limit, page_token=cursor or "", response_view=view
        )
        pager = await self._call(
            f"Queue {queue}", lambda: client.list_tasks(request=request, timeout=ADMIN_TIMEOUT)
        )
        async for page in pager.pages:
            tasks = [self._task_info(queue, t, full=full) for t in page.tasks]
            return Page(tasks, page.next_page_token or None)
        return Page([])

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """GetTask, FULL view."""
        client = self._started_client()
        request = GetTaskRequest(
            name=self._targets[queue].task_name(task_id), response_view=Task.View.FULL
        )
        task = await self._call(
            f"Task {task_id}", lambda: client.get_task(request=request, timeout=ADMIN_TIMEOUT)
        )
        return self._task_info(queue, task, full=True)

    async def delete_task(self, queue: str, task_id: str) -> None:
        """DeleteTask (only for tasks not yet completed)."""
        client = self._started_client()
        request = DeleteTaskRequest(name=self._targets[queue].task_name(task_id))
        await self._call(
            f"Task {task_id}", lambda: client.delete_task(request=request, timeout=ADMIN_TIMEOUT)
        )

    def _dead_letters(self, queue: str) -> tuple[DeadLetters, QueueTarget]:
        target = self._targets[queue]
        if target.relay_base is None:
            raise NotSupportedError(NO_DEAD_LETTERS)
        return DeadLetters(self._started_client()), target

    async def list_dead_letters(
        self, queue: str, *, limit: int, cursor: str | None
    ) -> Page[DeadLetterInfo]:
        """ListTasks (FULL view) on the queue's ``<queue>-dead-letters``."""
        letters, target = self._dead_letters(queue)
        return await letters.list(target, limit=limit, cursor=cursor)

    async def replay_dead_letter(self, queue: str, task_id: str) -> None:
        """CreateTask on the queue with the dead letter's request, then DeleteTask."""
        letters, target = self._dead_letters(queue)
        await letters.replay(target, task_id)

    async def replay_dead_letters(self, queue: str) -> int:
        """Replay every dead letter of the queue; return how many."""
        letters, target = self._dead_letters(queue)
        return await letters.replay_all(target)

    async def drop_dead_letter(self, queue: str, task_id: str) -> None:
        """DeleteTask on the queue's ``<queue>-dead-letters``."""
        letters, target = self._dead_letters(queue)
        await letters.drop(target, task_id)
