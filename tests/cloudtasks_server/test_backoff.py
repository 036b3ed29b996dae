"""cloudtasks-server on an injectable clock: the documented retry example (min 10 s, max
300 s, 3 doublings), Retry-After on a 429, and the 31-day task retention, with no sleeping.

The server runs in the test's event loop with a ManualClock; attempts go over real HTTP
to a real backend that always fails. After each attempt the task's schedule_time is read
back through the async client, then the clock jumps to it.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import grpc
import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import CloudTasksAsyncClient, HttpRequest, Queue, RetryConfig, Task
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from proxy.cloudtasks_server.server import LocalCloudTasks
from proxy.engines.local.clock import ManualClock
from tests.support.backend import RecordingBackend

pytestmark = pytest.mark.anyio

PARENT = "projects/p/locations/l"
WAIT = 20.0


class Harness:
    def __init__(self, server: LocalCloudTasks, clock: ManualClock, client: CloudTasksAsyncClient):
        self.server = server
        self.clock = clock
        self.client = client

    async def failing_task(self, backend: RecordingBackend, retry: RetryConfig) -> str:
        queue = f"{PARENT}/queues/b-{uuid.uuid4().hex[:8]}"
        await self.client.create_queue(parent=PARENT, queue=Queue(name=queue, retry_config=retry))
        task = Task(http_request=HttpRequest(url=backend.url + "/fail"))
        return (await self.client.create_task(parent=queue, task=task)).name

    async def next_delay(self, name: str, attempts: int) -> float:
        """Wait (real time, bounded) until ``attempts`` answers are recorded; return how far
        ahead of the clock the next attempt is scheduled."""
        with anyio.fail_after(WAIT):
            while True:
                task = await self.client.get_task(name=name)
                if task.response_count >= attempts:
                    return task.schedule_time.timestamp() - self.clock.time()
                await anyio.sleep(0.01)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    clock = ManualClock()
    server = LocalCloudTasks(str(tmp_path / "tasks.db"), clock=clock)
    await server.start()
    channel = grpc.aio.insecure_channel(server.address)
    client = CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    try:
        yield Harness(server, clock, client)
    finally:
        await channel.close()
        await server.stop(0)


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


async def test_backoff_follows_documented_example(
    harness: Harness, backend: RecordingBackend
) -> None:
    """min 10 s, max 300 s, 3 doublings: retries 10, 20, 40, 80, 160, 240, 300, 300 s after
    each failure, and each attempt's X-CloudTasks-TaskRetryCount counts the earlier ones."""
    backend.responder = lambda r: 500
    retry = RetryConfig(min_backoff=seconds(10), max_backoff=seconds(300), max_doublings=3)
    name = await harness.failing_task(backend, retry)
    delays = []
    for attempt in range(1, 9):
        delay = await harness.next_delay(name, attempt)
        delays.append(round(delay, 3))
        harness.clock.advance(delay)
    assert delays == [10, 20, 40, 80, 160, 240, 300, 300]
    counts = [r.header("x-cloudtasks-taskretrycount") for r in backend.received[:8]]
    assert counts == [str(n) for n in range(8)]


async def test_retry_after_on_429_is_honoured(harness: Harness, backend: RecordingBackend) -> None:
    """A 429 with Retry-After 120 puts the next attempt 120 s ahead, past a 10 s backoff."""
    backend.responder = lambda r: (429, {"retry-after": "120"})
    retry = RetryConfig(min_backoff=seconds(10), max_backoff=seconds(300))
    name = await harness.failing_task(backend, retry)
    assert round(await harness.next_delay(name, 1), 3) == 120


async def test_tasks_are_deleted_after_31_days(harness: Harness) -> None:
    """A task still waiting 31 days after its creation is deleted (task retention)."""
    queue = f"{PARENT}/queues/old-{uuid.uuid4().hex[:8]}"
    await harness.client.create_queue(parent=PARENT, queue=Queue(name=queue))
    await harness.client.pause_queue(name=queue)
    task = Task(http_request=HttpRequest(url="http://127.0.0.1:9/never"))
    name = (await harness.client.create_task(parent=queue, task=task)).name
    harness.clock.advance(30 * 86400)
    with anyio.fail_after(WAIT):
        await anyio.sleep(0.2)  # the sweep runs, and must keep the 30-day-old task
    assert (await harness.client.get_task(name=name)).name == name
    harness.clock.advance(86400 + 61)
    with anyio.fail_after(WAIT):
        while True:
            try:
                await harness.client.get_task(name=name)
            except gexc.NotFound:
                break
            await anyio.sleep(0.02)
