"""The queue RPCs: CreateQueue, GetQueue, ListQueues, UpdateQueue, DeleteQueue,
PauseQueue, ResumeQueue, PurgeQueue. Each takes the request message and returns the
response message, or raises :class:`ApiError`.
"""

from __future__ import annotations

import base64
import re
from dataclasses import astuple, replace

import grpc
from google.cloud.tasks_v2 import (
    CreateQueueRequest,
    DeleteQueueRequest,
    GetQueueRequest,
    ListQueuesRequest,
    ListQueuesResponse,
    PauseQueueRequest,
    PurgeQueueRequest,
    Queue,
    ResumeQueueRequest,
    UpdateQueueRequest,
)

from proxy.cloudtasks_server import queues
from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.queues import PAUSED, RUNNING, QueueConfig
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.validation import ApiError, invalid

_FILTER_RE = re.compile(r"^\s*state\s*[:=]\s*(RUNNING|PAUSED|DISABLED)\s*$")


def _token(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode()


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        raise invalid("page_token is not one this server returned.") from None


def _too_recent(name: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.FAILED_PRECONDITION,
        f"The queue {name} cannot be created because a queue with this name existed too "
        "recently (a deleted queue's name is blocked for 7 days).",
    )


class QueueApi:
    """Queue RPCs on ``runtime``."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _deleted_recently(self, name: str) -> bool:
        since = self.rt.clock.time() - v.QUEUE_NAME_BLOCK
        return self.rt.server_store.deleted_since(name, since)

    async def _save(self, config: QueueConfig, *, create: bool = False) -> Queue:
        if not await self.rt.server_store.save_queue(astuple(config), create=create):
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Queue {config.name} already exists.")
        self.rt.set_queue(config)
        return queues.to_message(config)

    async def create_queue(self, request: CreateQueueRequest) -> Queue:
        """Create a queue (RUNNING) with the given limits and the documented defaults."""
        parent = v.parse_parent(request.parent)
        config = queues.for_create(parent, request.queue)
        if config.name in self.rt.queues:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Queue {config.name} already exists.")
        if self._deleted_recently(config.name):
            raise _too_recent(config.name)
        return await self._save(config, create=True)

    async def get_queue(self, request: GetQueueRequest) -> Queue:
        """One queue."""
        v.parse_queue_name(request.name)
        return queues.to_message(self.rt.queue(request.name))

    async def list_queues(self, request: ListQueuesRequest) -> ListQueuesResponse:
        """Queues of a location by name, ``page_size`` (at most 9800) at a time; ``filter``
        may be ``state: RUNNING|PAUSED|DISABLED``."""
        parent = v.parse_parent(request.parent)
        size = v.page_size(request.page_size, v.MAX_QUEUE_PAGE)
        state = None
        if request.filter:
            match = _FILTER_RE.match(request.filter)
            if match is None:
                raise invalid(f"Unsupported filter {request.filter!r}: use 'state: PAUSED'.")
            state = int(Queue.State.__members__[match.group(1)])
        after = _untoken(request.page_token) if request.page_token else ""
        prefix = parent + "/queues/"
        names = sorted(
            name
            for name, config in self.rt.queues.items()
            if name.startswith(prefix) and name > after and (state is None or config.state == state)
        )
        page = names[:size]
        token = _token(page[-1]) if len(names) > size else ""
        return ListQueuesResponse(
            queues=[queues.to_message(self.rt.queues[n]) for n in page], next_page_token=token
        )

    async def update_queue(self, request: UpdateQueueRequest) -> Queue:
        """Change the fields named by the update mask (all given fields when empty);
        creates the queue when it does not exist, as Cloud Tasks does."""
        name = v.parse_queue_name(request.queue.name).path
        current = self.rt.queues.get(name)
        mask = list(request.update_mask.paths) if "update_mask" in request else []
        config = queues.for_update(current, request.queue, mask)
        if current is None and self._deleted_recently(name):
            raise _too_recent(name)
        return await self._save(config)

    async def delete_queue(self, request: DeleteQueueRequest) -> None:
        """Delete a queue and its tasks; its name is blocked for 7 days."""
        v.parse_queue_name(request.name)
        config = self.rt.queue(request.name)
        await self.rt.server_store.delete_queue(config.name, self.rt.clock.time())
        self.rt.drop_queue(config.name)

    async def pause_queue(self, request: PauseQueueRequest) -> Queue:
        """Stop dispatching (tasks can still be created; RunTask still runs)."""
        return await self._set_state(request.name, PAUSED)

    async def resume_queue(self, request: ResumeQueueRequest) -> Queue:
        """Dispatch again."""
        return await self._set_state(request.name, RUNNING)

    async def _set_state(self, name: str, state: int) -> Queue:
        v.parse_queue_name(name)
        return await self._save(replace(self.rt.queue(name), state=state))

    async def purge_queue(self, request: PurgeQueueRequest) -> Queue:
        """Delete every task created before the call (at once here; Cloud Tasks may take
        up to a minute); sets ``purge_time``."""
        v.parse_queue_name(request.name)
        config = self.rt.queue(request.name)
        now = round(self.rt.clock.time(), 6)
        await self.rt.server_store.purge_queue(config.name, now)
        return await self._save(replace(config, purge_time=now))
