"""A real ``grpc.aio`` Cloud Tasks server that keeps queue state (CreateQueue, GetQueue,
UpdateQueue with field masks), for `queues apply`: the PyPI emulator ignores UpdateQueue.

It reuses the lifecycle of :class:`FakeCloudTasks` (its own thread and loop); the client
library is never patched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import grpc
from google.cloud.tasks_v2 import (
    CreateQueueRequest,
    GetQueueRequest,
    Queue,
    UpdateQueueRequest,
)

from tests.support.fake_cloudtasks import SERVICE, FakeCloudTasks


class QueueStateServer(FakeCloudTasks):
    """Queues live in :attr:`queues` by full name; calls are counted per method."""

    def __init__(self) -> None:
        super().__init__()
        self.queues: dict[str, Queue] = {}
        self.calls: dict[str, int] = {"CreateQueue": 0, "GetQueue": 0, "UpdateQueue": 0}

    async def _create(
        self, request: CreateQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Queue:
        with self._lock:
            self.calls["CreateQueue"] += 1
            name = request.queue.name
            if name in self.queues:
                await context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{name} exists")
            queue = Queue(request.queue)
            queue.state = Queue.State.RUNNING
            self.queues[name] = queue
            return queue

    async def _get(
        self, request: GetQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Queue:
        with self._lock:
            self.calls["GetQueue"] += 1
            queue = self.queues.get(request.name)
        if queue is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Queue {request.name} not found")
        assert queue is not None
        return queue

    async def _update(
        self, request: UpdateQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Queue:
        with self._lock:
            self.calls["UpdateQueue"] += 1
            name = request.queue.name
            stored = self.queues.get(name)
            if stored is None:  # UpdateQueue creates a missing queue, as documented
                stored = Queue(name=name, state=Queue.State.RUNNING)
            merged = Queue.pb(stored)
            request.update_mask.MergeMessage(Queue.pb(request.queue), merged)
            self.queues[name] = Queue.wrap(merged)
            return self.queues[name]

    def handler(self) -> grpc.GenericRpcHandler:
        def unary(handler: Any, request_type: Any) -> grpc.RpcMethodHandler[Any, Any]:
            return grpc.unary_unary_rpc_method_handler(
                handler,
                request_deserializer=request_type.deserialize,
                response_serializer=Queue.serialize,
            )

        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "CreateQueue": unary(self._create, CreateQueueRequest),
                "GetQueue": unary(self._get, GetQueueRequest),
                "UpdateQueue": unary(self._update, UpdateQueueRequest),
            },
        )


@contextlib.contextmanager
def run_queue_server() -> Iterator[QueueStateServer]:
    """A started :class:`QueueStateServer`, stopped on exit."""
    server = QueueStateServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
