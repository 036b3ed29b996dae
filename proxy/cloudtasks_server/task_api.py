"""The task RPCs: CreateTask, BatchCreateTasks, GetTask, ListTasks, DeleteTask, RunTask.

Named tasks are de-duplicated: a name is taken while its task exists and for an hour
after the task completed, ran out of retries, or was deleted or purged
(ALREADY_EXISTS), as Cloud Tasks documents for queues created through the API.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
from google.cloud.tasks_v2 import (
    BatchCreateTasksRequest,
    CreateTaskRequest,
    DeleteTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    ListTasksResponse,
    RunTaskRequest,
    Task,
)

from proxy.cloudtasks_server import operations, tasks
from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.validation import ApiError, QueueName, invalid, not_found
from proxy.engines.local.store.server import NewTask

MAX_BATCH = 100  # tasks per BatchCreateTasks


def _exists(name: str) -> ApiError:
    return ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Requested entity already exists: {name}")


class TaskApi:
    """Task RPCs on ``runtime``."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def _row(self, name: str) -> tuple[Any, ...]:
        queue, _ = v.parse_task_name(name)
        self.rt.queue(queue.path)
        row = await self.rt.server_store.task_by_name(name)
        if row is None:
            raise not_found(f"Task {name} does not exist.")
        return row

    def _validated(self, queue: QueueName, task: Task, now: float) -> NewTask:
        size = len(Task.serialize(task))
        return tasks.validate(queue, task, now=now, size=size, max_bytes=self.rt.max_task_bytes)

    @staticmethod
    def _created(new: NewTask, seq: int, view: int) -> Task:
        row = (seq, new.name, new.url, new.method, json.dumps(new.headers), new.body, new.token,
               new.schedule_time, new.create_time, new.dispatch_deadline, 0, 0, None, None,
               None, None, None)  # fmt: skip
        return tasks.to_message(row, view)

    async def create_task(self, request: CreateTaskRequest) -> Task:
        """Store an HTTP task durably (fsync'd) and return it; the dispatcher delivers it
        at its schedule time."""
        queue = v.parse_queue_name(request.parent)
        config = self.rt.queue(queue.path)
        now = self.rt.clock.time()
        new = self._validated(queue, request.task, now)
        seq = await self.rt.server_store.insert_task(config.name, new, now)
        if seq is None:
            raise _exists(new.name)
        if new.schedule_time <= self.rt.clock.time():
            self.rt.dispatchers[config.name].notify()
        return self._created(new, seq, int(request.response_view))

    async def batch_create_tasks(self, request: BatchCreateTasksRequest) -> Any:
        """Create up to 100 tasks in one queue, each as CreateTask would (not atomic: each
        request succeeds or fails alone), in one durable transaction; returns the finished
        ``google.longrunning.Operation`` (``operations.py``). A repeated ``request_id``
        returns the first call's operation and creates nothing."""
        queue = v.parse_queue_name(request.parent)
        config = self.rt.queue(queue.path)
        if not 1 <= len(request.requests) <= MAX_BATCH:
            raise invalid(f"BatchCreateTasksRequest.requests must hold 1 to {MAX_BATCH} requests.")
        for index, each in enumerate(request.requests):
            if each.parent != request.parent:
                raise invalid(
                    f"requests[{index}].parent {each.parent!r} is not the batch's parent"
                    f" {request.parent!r}."
                )
        now = self.rt.clock.time()
        failed: dict[int, ApiError] = {}
        valid: list[tuple[int, NewTask]] = []
        for index, each in enumerate(request.requests):
            try:
                valid.append((index, self._validated(queue, each.task, now)))
            except ApiError as exc:
                failed[index] = exc
        name = operations.operation_name(queue, request.request_id)

        def finish(seqs: list[int | None]) -> bytes:
            created = []
            for (index, new), seq in zip(valid, seqs, strict=True):
                if seq is None:
                    failed[index] = _exists(new.name)
                else:
                    view = int(request.requests[index].response_view)
                    created.append(self._created(new, seq, view))
            operation = operations.batch_done(name, now, created, dict(sorted(failed.items())))
            return operations.encode(operation)

        news = [new for _, new in valid]
        body = await self.rt.server_store.insert_batch(config.name, news, now, name, finish)
        if any(new.schedule_time <= self.rt.clock.time() for new in news):
            self.rt.dispatchers[config.name].notify()
        return operations.decode(body)

    async def get_task(self, request: GetTaskRequest) -> Task:
        """One task (BASIC view unless FULL is asked for)."""
        return tasks.to_message(await self._row(request.name), int(request.response_view))

    async def list_tasks(self, request: ListTasksRequest) -> ListTasksResponse:
        """Tasks of a queue in creation order, ``page_size`` (at most 1000) at a time."""
        queue = v.parse_queue_name(request.parent)
        self.rt.queue(queue.path)
        size = v.page_size(request.page_size, v.MAX_TASK_PAGE)
        after = -1
        if request.page_token:
            try:
                after = int(base64.urlsafe_b64decode(request.page_token.encode()))
            except ValueError:
                raise invalid("page_token is not one this server returned.") from None
        rows = await self.rt.server_store.task_page(queue.path, after, size + 1)
        view = int(request.response_view)
        token = ""
        if len(rows) > size:
            token = base64.urlsafe_b64encode(str(rows[size - 1][0]).encode()).decode()
        return ListTasksResponse(
            tasks=[tasks.to_message(r, view) for r in rows[:size]], next_page_token=token
        )

    async def delete_task(self, request: DeleteTaskRequest) -> None:
        """Delete a task that is waiting or being attempted; its name stays taken."""
        seq = (await self._row(request.name))[0]
        now = self.rt.clock.time()
        if not await self.rt.server_store.delete_task(seq, now):
            raise not_found(f"Task {request.name} does not exist.")

    async def run_task(self, request: RunTaskRequest) -> Task:
        """Dispatch a task now, ignoring the rate limits and a paused queue; returns the
        task with the new attempt counted."""
        row = await self._row(request.name)
        queue, _ = v.parse_task_name(request.name)
        found = await self.rt.server_store.leased_task(row[0])
        if found is None:
            raise not_found(f"Task {request.name} does not exist.")
        await self.rt.dispatchers[queue.path].run_now(found)
        return tasks.to_message(await self._row(request.name), int(request.response_view))
