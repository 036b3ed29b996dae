"""Conformance of BatchCreateTasks (a long-running operation) and the Operations service's
GetOperation, through the google-cloud-tasks client (sync, async and REST), against our
server and the PyPI emulator (divergences: ``@diverges``).

Expected behaviour is the v2 API's as documented: up to 100 CreateTaskRequests for one
queue, not atomic (each request fails alone, reported in the metadata's
``failed_requests`` by index), the created tasks in the response, and a ``request_id``
that identifies the operation so a retried call does not create the tasks again.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import (
    BatchCreateTasksMetadata,
    BatchCreateTasksResponse,
    CreateTaskRequest,
    HttpRequest,
    Task,
)

from tests.cloudtasks_server.conftest import Api, diverges
from tests.cloudtasks_server.test_conformance import URL, http_task, paused_queue, qname

State = BatchCreateTasksMetadata.State
INVALID_ARGUMENT, ALREADY_EXISTS, ABORTED = 3, 6, 10  # google.rpc.Code


def requests(queue: str, *tasks: Task) -> list[CreateTaskRequest]:
    return [CreateTaskRequest(parent=queue, task=task) for task in tasks]


def batch(api: Api, queue: str, tasks: list[CreateTaskRequest], **fields: Any) -> Any:
    """The raw google.longrunning.Operation BatchCreateTasks returned."""
    return api.batch_create_tasks(parent=queue, requests=tasks, **fields).operation


def metadata(operation: Any) -> BatchCreateTasksMetadata:
    return BatchCreateTasksMetadata.deserialize(operation.metadata.value)


def response(operation: Any) -> BatchCreateTasksResponse:
    return BatchCreateTasksResponse.deserialize(operation.response.value)


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_create_tasks(api: Api, parent: str) -> None:
    """Three tasks in one call: a finished operation, state SUCCEEDED, no failures, the
    three tasks in the response (in request order) and in the queue; GetOperation returns
    the same operation."""
    queue = paused_queue(api, parent)
    named = Task(name=f"{queue.name}/tasks/named", http_request=HttpRequest(url=URL))
    operation = batch(api, queue.name, requests(queue.name, http_task(), named, http_task()))
    assert operation.done
    assert operation.name.startswith(f"{parent}/operations/")
    meta = metadata(operation)
    assert meta.state == State.SUCCEEDED
    assert not meta.failed_requests
    assert meta.start_time.timestamp() > 0
    created = response(operation).tasks
    assert len(created) == 3
    assert created[1].name == named.name
    listed = [t.name for page in api.pages("list_tasks", parent=queue.name) for t in page]
    assert listed == [t.name for t in created]
    again = api.get_operation(name=operation.name)
    assert again.done
    assert again.name == operation.name
    assert [t.name for t in response(again).tasks] == [t.name for t in created]


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_is_not_atomic(api: Api, parent: str) -> None:
    """An invalid request and a taken name fail alone, by index (INVALID_ARGUMENT,
    ALREADY_EXISTS); the others are created; state PARTIALLY_SUCCEEDED."""
    queue = paused_queue(api, parent)
    taken = Task(name=f"{queue.name}/tasks/taken", http_request=HttpRequest(url=URL))
    api.create_task(parent=queue.name, task=taken)
    bad = Task(http_request=HttpRequest(url="ftp://example.com/"))
    operation = batch(api, queue.name, requests(queue.name, http_task(), bad, taken))
    meta = metadata(operation)
    assert meta.state == State.PARTIALLY_SUCCEEDED
    assert {i: s.code for i, s in meta.failed_requests.items()} == {
        1: INVALID_ARGUMENT,
        2: ALREADY_EXISTS,
    }
    assert len(response(operation).tasks) == 1
    assert len([t for page in api.pages("list_tasks", parent=queue.name) for t in page]) == 2


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_with_no_success_is_aborted(api: Api, parent: str) -> None:
    """When every request fails, the operation carries an ABORTED error (and the
    failures in its metadata) instead of a response."""
    queue = paused_queue(api, parent)
    bad = Task(http_request=HttpRequest(url="not a url"))
    operation = batch(api, queue.name, requests(queue.name, bad, bad))
    assert operation.done
    assert operation.error.code == ABORTED
    assert sorted(metadata(operation).failed_requests) == [0, 1]


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_request_id_is_idempotent(api: Api, parent: str) -> None:
    """The same request_id twice: the same operation, and the tasks are created once."""
    queue = paused_queue(api, parent)
    first = batch(api, queue.name, requests(queue.name, http_task(), http_task()), request_id="r-1")
    second = batch(api, queue.name, requests(queue.name, http_task()), request_id="r-1")
    assert second.name == first.name
    assert len(response(second).tasks) == 2
    assert len([t for page in api.pages("list_tasks", parent=queue.name) for t in page]) == 2
    other = batch(api, queue.name, requests(queue.name, http_task()), request_id="r-2")
    assert other.name != first.name


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
@pytest.mark.parametrize("count", [0, 101])
def test_batch_size_is_limited(api: Api, parent: str, count: int) -> None:
    """No requests, or more than 100: INVALID_ARGUMENT, nothing created."""
    queue = paused_queue(api, parent)
    with pytest.raises(gexc.InvalidArgument):
        batch(api, queue.name, requests(queue.name, *[http_task() for _ in range(count)]))
    assert not [t for page in api.pages("list_tasks", parent=queue.name) for t in page]


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_requests_must_name_the_queue(api: Api, parent: str) -> None:
    """A CreateTaskRequest whose parent is not the batch's queue: INVALID_ARGUMENT for the
    whole call."""
    queue = paused_queue(api, parent)
    other = paused_queue(api, parent)
    mixed = [*requests(queue.name, http_task()), *requests(other.name, http_task())]
    with pytest.raises(gexc.InvalidArgument):
        batch(api, queue.name, mixed)
    assert not [t for page in api.pages("list_tasks", parent=queue.name) for t in page]


@diverges("has no BatchCreateTasks (UNIMPLEMENTED)")
def test_batch_in_missing_queue_is_not_found(api: Api, parent: str) -> None:
    """BatchCreateTasks on a queue that does not exist: NOT_FOUND."""
    name = qname(parent)
    with pytest.raises(gexc.NotFound):
        batch(api, name, requests(name, http_task()))


@diverges("has no Operations service (UNIMPLEMENTED)")
def test_get_missing_operation_is_not_found(api: Api, parent: str) -> None:
    """GetOperation of an operation that does not exist: NOT_FOUND."""
    with pytest.raises(gexc.NotFound):
        api.get_operation(name=f"{parent}/operations/missing")
