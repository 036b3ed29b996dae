"""A real ``grpc.aio`` server speaking ``google.cloud.tasks.v2.CloudTasks`` (CreateTask and
GetQueue), for what the emulator cannot show: ALREADY_EXISTS on a repeated task name,
server errors, slow answers.

It runs in a thread with its own event loop, so sync tests, async tests and a proxy under
uvicorn in another thread can all reach it at ``host``. The client library is never
patched: the engine talks gRPC to this server exactly as it would to Cloud Tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.cloud.tasks_v2 import CreateTaskRequest, GetQueueRequest, Queue, Task

from tests.support.loop_thread import GrpcServerThread

SERVICE = "google.cloud.tasks.v2.CloudTasks"
START_TIMEOUT = 10.0


@dataclass(frozen=True)
class Failure:
    """Answer one call with ``code``; ``after_store`` stores the task first (the service
    committed it but the answer was lost), as a retry then meets ALREADY_EXISTS."""

    code: grpc.StatusCode
    message: str
    after_store: bool = False


class FakeCloudTasks(GrpcServerThread):
    """Cloud Tasks stand-in: remembers task names and answers ALREADY_EXISTS on a repeat
    (as the real service does), fails the next calls on request, delays answers.

    ``missing_queues`` holds full queue paths that answer NOT_FOUND. Every field read by
    tests is guarded by one lock, since the server runs in its own thread.
    """

    def __init__(self) -> None:
        super().__init__("the fake Cloud Tasks server", START_TIMEOUT)
        self._lock = threading.Lock()
        self._tasks: dict[str, Task] = {}
        self._requests: list[CreateTaskRequest] = []
        self._metadata: list[dict[str, str]] = []
        self._failures: deque[Failure] = deque()
        self._delays: deque[float] = deque()
        self._outage: Failure | None = None
        self.missing_queues: set[str] = set()
        self.create_calls = 0
        self.get_queue_calls = 0

    # ------------------------------------------------------------ test controls

    def fail_next(
        self,
        count: int,
        code: grpc.StatusCode,
        message: str = "injected failure",
        *,
        after_store: bool = False,
    ) -> None:
        """Answer the next ``count`` calls (CreateTask or GetQueue) with ``code``."""
        with self._lock:
            self._failures.extend(Failure(code, message, after_store) for _ in range(count))

    def outage(self, code: grpc.StatusCode | None, *, after_store: bool = False) -> None:
        """Answer every call with ``code`` from now on (after the ones queued by
        :meth:`fail_next`); ``None`` ends the outage. ``after_store``: CreateTask stores
        the task first, so the answers alone are lost."""
        with self._lock:
            self._outage = None if code is None else Failure(code, "outage", after_store)

    def delay_next(self, count: int, seconds: float) -> None:
        """Hold the answers to the next ``count`` calls for ``seconds`` (after storing)."""
        with self._lock:
            self._delays.extend(seconds for _ in range(count))

    @property
    def tasks(self) -> dict[str, Task]:
        """Stored tasks by full name."""
        with self._lock:
            return dict(self._tasks)

    @property
    def requests(self) -> list[CreateTaskRequest]:
        """Every CreateTask request received, failed ones included."""
        with self._lock:
            return list(self._requests)

    @property
    def metadata(self) -> list[dict[str, str]]:
        """The gRPC metadata of every CreateTask call, in order."""
        with self._lock:
            return list(self._metadata)

    # ------------------------------------------------------------ handlers

    def _next(self) -> tuple[Failure | None, float]:
        with self._lock:
            failure = self._failures.popleft() if self._failures else self._outage
            delay = self._delays.popleft() if self._delays else 0.0
        return failure, delay

    async def _create_task(
        self, request: CreateTaskRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Task:
        metadata = {str(k): str(v) for k, v in context.invocation_metadata() or ()}
        with self._lock:
            self.create_calls += 1
            self._requests.append(request)
            self._metadata.append(metadata)
        failure, delay = self._next()
        if failure is not None and not failure.after_store:
            await context.abort(failure.code, failure.message)
        if request.parent in self.missing_queues:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Queue {request.parent} not found.")
        task = request.task
        with self._lock:
            exists = task.name in self._tasks
            if not exists:
                self._tasks[task.name] = task
        if delay:
            await asyncio.sleep(delay)
        if failure is not None:
            await context.abort(failure.code, failure.message)
        if exists:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "Requested entity already exists")
        return task

    async def _get_queue(
        self, request: GetQueueRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> Queue:
        with self._lock:
            self.get_queue_calls += 1
        failure, delay = self._next()
        if delay:
            await asyncio.sleep(delay)
        if failure is not None:
            await context.abort(failure.code, failure.message)
        if request.name in self.missing_queues:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"Queue {request.name} not found.")
        return Queue(name=request.name, state=Queue.State.RUNNING)

    def handler(self) -> grpc.GenericRpcHandler:
        """CreateTask and GetQueue."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "CreateTask": grpc.unary_unary_rpc_method_handler(
                    self._create_task,
                    request_deserializer=CreateTaskRequest.deserialize,
                    response_serializer=Task.serialize,
                ),
                "GetQueue": grpc.unary_unary_rpc_method_handler(
                    self._get_queue,
                    request_deserializer=GetQueueRequest.deserialize,
                    response_serializer=Queue.serialize,
                ),
            },
        )


@contextlib.contextmanager
def run_fake_cloudtasks() -> Iterator[FakeCloudTasks]:
    """A started :class:`FakeCloudTasks`, stopped on exit."""
    fake = FakeCloudTasks()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_cloudtasks() -> Iterator[FakeCloudTasks]:
    """A fresh fake Cloud Tasks gRPC server on a free port of 127.0.0.1."""
    with run_fake_cloudtasks() as fake:
        yield fake
