"""cloudtasks-server as a real process: queues and tasks survive kill -9, and attempts in
flight when it dies are delivered again by the next process (at least once)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud.tasks_v2 import (
    CreateTaskRequest,
    HttpRequest,
    HttpTarget,
    PathOverride,
    Queue,
    Task,
    UriOverride,
)

from tests.support.backend import RecordingBackend
from tests.support.cloudtasks_server import ServerProcess, sync_client
from tests.support.servers import wait_for

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/durable"
WAIT = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "tasks.db")
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_tasks_and_queues_survive_kill_9(server: ServerProcess, backend: RecordingBackend) -> None:
    """30 tasks stored in a paused queue are all there after kill -9 and a restart (queue
    still paused, names still de-duplicated), and are delivered once it is resumed."""
    client, channel = sync_client(server.host)
    client.create_queue(parent=PARENT, queue=Queue(name=QUEUE))
    client.pause_queue(name=QUEUE)
    for n in range(30):
        task = Task(name=f"{QUEUE}/tasks/t-{n}", http_request=HttpRequest(url=backend.url))
        client.create_task(parent=QUEUE, task=task)
    channel.close()
    server.kill()
    server.start()
    client, channel = sync_client(server.host)
    try:
        assert client.get_queue(name=QUEUE).state == Queue.State.PAUSED
        assert len(list(client.list_tasks(parent=QUEUE))) == 30
        client.resume_queue(name=QUEUE)
        got = backend.wait_for_count(30, WAIT)
        assert {r.header("x-cloudtasks-taskname") for r in got} == {f"t-{n}" for n in range(30)}
    finally:
        channel.close()


def test_attempts_in_flight_at_kill_9_are_redelivered(
    server: ServerProcess, backend: RecordingBackend
) -> None:
    """Tasks whose attempts were in flight when the process was killed are attempted again
    after the restart, and the queue ends empty."""
    backend.delay = 2.0
    client, channel = sync_client(server.host)
    client.create_queue(parent=PARENT, queue=Queue(name=QUEUE))
    for n in range(5):
        task = Task(name=f"{QUEUE}/tasks/t-{n}", http_request=HttpRequest(url=backend.url))
        client.create_task(parent=QUEUE, task=task)
    channel.close()
    wait_for(lambda: backend.in_flight == 5, WAIT)
    server.kill()
    backend.delay = 0.0
    restarted = time.monotonic()
    server.start()
    client, channel = sync_client(server.host)
    try:

        def redelivered() -> set[str | None]:
            return {r.header("x-cloudtasks-taskname") for r in backend.received if r.at > restarted}

        wait_for(lambda: len(redelivered()) == 5, WAIT)
        wait_for(lambda: not list(client.list_tasks(parent=QUEUE)), WAIT)
    finally:
        channel.close()


def test_queue_routing_and_operations_survive_kill_9(
    server: ServerProcess, backend: RecordingBackend
) -> None:
    """A queue's http_target and a BatchCreateTasks operation are there after kill -9 and
    a restart, and the batch's tasks are then delivered along the queue's routing."""
    client, channel = sync_client(server.host)
    target = HttpTarget(uri_override=UriOverride(path_override=PathOverride(path="/routed")))
    client.create_queue(parent=PARENT, queue=Queue(name=QUEUE, http_target=target))
    client.pause_queue(name=QUEUE)
    task = Task(http_request=HttpRequest(url=backend.url + "/own"))
    requests = [CreateTaskRequest(parent=QUEUE, task=task) for _ in range(3)]
    name = client.batch_create_tasks(parent=QUEUE, requests=requests).operation.name
    channel.close()
    server.kill()
    server.start()
    client, channel = sync_client(server.host)
    try:
        queue = client.get_queue(name=QUEUE)
        assert queue.http_target.uri_override.path_override.path == "/routed"
        assert client.get_operation(request={"name": name}).done
        client.resume_queue(name=QUEUE)
        got = backend.wait_for_count(3, WAIT)
        assert {r.path for r in got} == {"/routed"}
    finally:
        channel.close()
