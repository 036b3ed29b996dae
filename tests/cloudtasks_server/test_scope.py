"""What cloudtasks-server deliberately does not serve (Cloud Tasks does): it says so with
a clear status instead of storing something it would not deliver."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import (
    AppEngineHttpRequest,
    AppEngineRouting,
    CloudTasksClient,
    Queue,
    Task,
)

from tests.support.cloudtasks_server import ServerThread, sync_client

PARENT = "projects/p/locations/scope"


@pytest.fixture
def client(local_server: ServerThread) -> Iterator[CloudTasksClient]:
    client, channel = sync_client(local_server.host)
    yield client
    channel.close()


def test_app_engine_task_is_invalid_argument(client: CloudTasksClient) -> None:
    """Only HTTP tasks are served: an App Engine task is INVALID_ARGUMENT."""
    queue = f"{PARENT}/queues/s-{uuid.uuid4().hex[:8]}"
    client.create_queue(parent=PARENT, queue=Queue(name=queue))
    task = Task(app_engine_http_request=AppEngineHttpRequest(relative_uri="/work"))
    with pytest.raises(gexc.InvalidArgument, match="Only HTTP tasks"):
        client.create_task(parent=queue, task=task)


def test_app_engine_routing_override_is_unimplemented(client: CloudTasksClient) -> None:
    """A queue-level App Engine routing override is UNIMPLEMENTED, and no queue is made
    (queue-level http_target is served: test_conformance_routing.py)."""
    queue = f"{PARENT}/queues/s-{uuid.uuid4().hex[:8]}"
    routing = AppEngineRouting(service="worker")
    with pytest.raises(gexc.MethodNotImplemented):
        client.create_queue(
            parent=PARENT, queue=Queue(name=queue, app_engine_routing_override=routing)
        )
    with pytest.raises(gexc.NotFound):
        client.get_queue(name=queue)
