"""Transcoding of REST calls into request messages (no server: the module is pure)."""

from __future__ import annotations

import pytest
from google.cloud import tasks_v2 as t

from proxy.cloudtasks_server.rest_request import (
    BadRequestError,
    SystemParameters,
    build_request,
    system_parameters,
)

QUEUE = "projects/p/locations/l/queues/q"


def test_mask_forms_give_the_same_paths() -> None:
    """snake_case, lowerCamel and mixed masks (comma-separated, spaces allowed) all become
    the proto paths."""
    for mask in (
        "rate_limits.max_dispatches_per_second,retry_config",
        "rateLimits.maxDispatchesPerSecond, retryConfig",
        "rate_limits.maxDispatchesPerSecond,retry_config",
    ):
        request = build_request(
            t.UpdateQueueRequest, {"queue.name": QUEUE}, "queue", b"{}", f"updateMask={mask}"
        )
        assert list(request.update_mask.paths) == [
            "rate_limits.max_dispatches_per_second",
            "retry_config",
        ]
        assert request.queue.name == QUEUE


def test_path_variable_wins_over_the_body() -> None:
    """A path variable replaces the same field given in the body, under either name."""
    body = b'{"parent": "projects/x/locations/y/queues/z", "responseView": "FULL"}'
    request = build_request(t.CreateTaskRequest, {"parent": QUEUE}, "*", body, "")
    assert request.parent == QUEUE
    assert request.response_view == t.Task.View.FULL


def test_query_names_and_values() -> None:
    """Query parameters bind by JSON or proto name; enums by name or number; standard
    parameters are not fields."""
    request = build_request(
        t.ListTasksRequest, {"parent": QUEUE}, None, b"", "page_size=5&responseView=2&$alt=json"
    )
    assert (request.page_size, request.response_view) == (5, t.Task.View.FULL)


@pytest.mark.parametrize(
    ("body_field", "body", "query", "message"),
    [
        ("*", b"[1]", "", "Invalid JSON payload received. The body must be a JSON object."),
        ("*", b'{"task": {"httpRequest": {"headers": []}}}', "",
         "Invalid value at 'task.http_request.headers' (type.googleapis.com/"
         'google.cloud.tasks.v2.HttpRequest.HeadersEntry), "[]"'),
        ("*", b'{"task": {"scheduleTime": "tomorrow"}}', "",
         "Invalid value at 'task.schedule_time' (type.googleapis.com/google.protobuf.Timestamp),"
         ' "tomorrow"'),
        ("*", b"{}", "pageSize=3",
         'Invalid JSON payload received. Unknown name "pageSize": Cannot bind query parameter.'
         " Field 'pageSize' could not be found in request message."),
    ],
    ids=["not-an-object", "map-as-list", "bad-timestamp", "query-beside-star-body"],
)  # fmt: skip
def test_refusals(body_field: str, body: bytes, query: str, message: str) -> None:
    """Shapes that do not fit the request: INVALID_ARGUMENT with Google's sentence (a body
    of "*" leaves no field for a query parameter)."""
    with pytest.raises(BadRequestError) as caught:
        build_request(t.CreateTaskRequest, {"parent": QUEUE}, body_field, body, query)
    assert caught.value.message == message


def test_system_parameters() -> None:
    """fields, prettyPrint and alt are read, also with a '$'; defaults otherwise."""
    assert system_parameters("") == SystemParameters()
    got = system_parameters("$fields=name&prettyPrint=false&alt=json;enum-encoding=int")
    assert got == SystemParameters(fields="name", pretty=False, enums_as_numbers=True)
    for bad in ("prettyPrint=yes", "alt=xml", "$.xgafv=3"):
        with pytest.raises(BadRequestError):
            system_parameters(bad)
