"""Conformance of the Cloud Tasks v2 API, through the google-cloud-tasks client (sync and
async), against our server and the PyPI emulator (divergences: ``@diverges``).

Expected behaviour is Cloud Tasks' as documented (shared/CLOUD_TASKS.md): defaults,
limits, field masks, paging, de-duplication windows and status codes.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import (
    HttpMethod,
    HttpRequest,
    Queue,
    RateLimits,
    RetryConfig,
    Task,
)
from google.protobuf import field_mask_pb2

from tests.cloudtasks_server.conftest import Api, diverges
from tests.support.backend import RecordingBackend
from tests.support.servers import wait_for

URL = "http://127.0.0.1:9/never"  # a paused queue never sends there


def qname(parent: str, prefix: str = "q") -> str:
    return f"{parent}/queues/{prefix}-{uuid.uuid4().hex[:10]}"


def make_queue(api: Api, parent: str, **fields: Any) -> Queue:
    queue: Queue = api.create_queue(parent=parent, queue=Queue(name=qname(parent), **fields))
    return queue


def paused_queue(api: Api, parent: str, **fields: Any) -> Queue:
    queue = make_queue(api, parent, **fields)
    api.pause_queue(name=queue.name)
    return queue


def http_task(url: str = URL, **fields: Any) -> Task:
    request = fields.pop("http_request", None) or HttpRequest(url=url, body=b"payload")
    return Task(http_request=request, **fields)


def in_days(days: float) -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.UTC) + datetime.timedelta(days=days)


# ---------------------------------------------------------------- queues


@diverges("reports no rate limits, retry config or defaults on a new queue")
def test_create_queue_applies_documented_defaults(api: Api, parent: str) -> None:
    """A queue created with a name only gets rate 500, burst 100, concurrency 1000 and
    retry 100 attempts, 0.1 s..3600 s, 16 doublings, state RUNNING."""
    queue = make_queue(api, parent)
    assert queue.state == Queue.State.RUNNING
    assert queue.rate_limits.max_dispatches_per_second == 500
    assert queue.rate_limits.max_burst_size == 100
    assert queue.rate_limits.max_concurrent_dispatches == 1000
    retry = queue.retry_config
    assert retry.max_attempts == 100
    assert retry.min_backoff.total_seconds() == pytest.approx(0.1)
    assert retry.max_backoff.total_seconds() == 3600
    assert retry.max_doublings == 16


@diverges("does not derive max_burst_size from the rate")
def test_burst_is_derived_from_rate(api: Api, parent: str) -> None:
    """max_burst_size is output-only: rate/5 (10 at 1/s), whatever the client sends."""
    fifty = make_queue(api, parent, rate_limits=RateLimits(max_dispatches_per_second=50,
                                                           max_burst_size=3))  # fmt: skip
    one = make_queue(api, parent, rate_limits=RateLimits(max_dispatches_per_second=1))
    assert fifty.rate_limits.max_burst_size == 10
    assert one.rate_limits.max_burst_size == 10
    got = api.get_queue(name=fifty.name)
    assert got.rate_limits.max_dispatches_per_second == 50
    assert got.rate_limits.max_burst_size == 10


@diverges("accepts any queue id")
@pytest.mark.parametrize("queue_id", ["bad_id", "x" * 101, "dots.not.allowed"])
def test_bad_queue_id_is_invalid_argument(api: Api, parent: str, queue_id: str) -> None:
    """QUEUE_ID must be 1-100 letters, digits or hyphens."""
    with pytest.raises(gexc.InvalidArgument):
        api.create_queue(parent=parent, queue=Queue(name=f"{parent}/queues/{queue_id}"))


@diverges("accepts any rate and concurrency")
@pytest.mark.parametrize(
    "limits",
    [
        RateLimits(max_dispatches_per_second=501),
        RateLimits(max_concurrent_dispatches=5001),
        RateLimits(max_dispatches_per_second=-1),
    ],
    ids=["rate-501", "concurrency-5001", "negative-rate"],
)
def test_limits_are_enforced(api: Api, parent: str, limits: RateLimits) -> None:
    """Rate above 500/s, concurrency above 5000 or a negative rate: INVALID_ARGUMENT."""
    with pytest.raises(gexc.InvalidArgument):
        api.create_queue(parent=parent, queue=Queue(name=qname(parent), rate_limits=limits))


@diverges("accepts a queue whose name is not under the parent")
def test_queue_outside_parent_is_invalid_argument(api: Api, parent: str) -> None:
    """The queue name must sit under the request's parent."""
    other = f"projects/other/locations/elsewhere/queues/q-{uuid.uuid4().hex[:8]}"
    with pytest.raises(gexc.InvalidArgument):
        api.create_queue(parent=parent, queue=Queue(name=other))


@diverges("creating an existing queue returns it instead of ALREADY_EXISTS")
def test_create_existing_queue_is_already_exists(api: Api, parent: str) -> None:
    """Creating a queue twice: ALREADY_EXISTS."""
    queue = make_queue(api, parent)
    with pytest.raises(gexc.AlreadyExists):
        api.create_queue(parent=parent, queue=Queue(name=queue.name))


@diverges("answers UNKNOWN (a KeyError) for a missing queue")
def test_get_missing_queue_is_not_found(api: Api, parent: str) -> None:
    """GetQueue of a queue that does not exist: NOT_FOUND."""
    with pytest.raises(gexc.NotFound):
        api.get_queue(name=qname(parent))


@diverges("answers UNKNOWN (a KeyError) for a malformed name")
def test_malformed_queue_name_is_invalid_argument(api: Api) -> None:
    """GetQueue with a name that is not projects/P/locations/L/queues/Q: INVALID_ARGUMENT
    (over REST the library itself refuses it: no HTTP binding matches, ValueError)."""
    with pytest.raises(ValueError if api.mode == "rest" else gexc.InvalidArgument):
        api.get_queue(name="queues/nope")


@diverges("ignores page_size: everything comes in one page")
def test_list_queues_pages(api: Api, parent: str) -> None:
    """ListQueues with page_size 2 returns every queue of the location once, 2 per page."""
    names = {make_queue(api, parent).name for _ in range(5)}
    pages = api.pages("list_queues", parent=parent, page_size=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(q.name for page in pages for q in page) == sorted(names)


def test_list_queues_of_location(api: Api, parent: str) -> None:
    """ListQueues without page_size lists exactly the queues of that location."""
    names = {make_queue(api, parent).name for _ in range(3)}
    pages = api.pages("list_queues", parent=parent)
    assert {q.name for page in pages for q in page} == names


@diverges("ignores the filter")
def test_list_queues_filter_by_state(api: Api, parent: str) -> None:
    """filter 'state: PAUSED' lists only paused queues."""
    paused = paused_queue(api, parent)
    make_queue(api, parent)
    pages = api.pages("list_queues", parent=parent, filter="state: PAUSED")
    assert [q.name for page in pages for q in page] == [paused.name]


@diverges("UpdateQueue of an existing queue changes nothing")
def test_update_queue_changes_only_masked_fields(api: Api, parent: str) -> None:
    """UpdateQueue with a field mask changes the named fields and keeps the others."""
    queue = make_queue(
        api,
        parent,
        rate_limits=RateLimits(max_dispatches_per_second=5, max_concurrent_dispatches=7),
        retry_config=RetryConfig(max_attempts=4),
    )
    change = Queue(
        name=queue.name,
        rate_limits=RateLimits(max_dispatches_per_second=20, max_concurrent_dispatches=99),
        retry_config=RetryConfig(max_attempts=9, min_backoff=datetime.timedelta(seconds=2)),
    )
    mask = field_mask_pb2.FieldMask(
        paths=["rate_limits.max_dispatches_per_second", "retry_config.min_backoff"]
    )
    updated = api.update_queue(queue=change, update_mask=mask)
    got = api.get_queue(name=queue.name)
    for q in (updated, got):
        assert q.rate_limits.max_dispatches_per_second == 20
        assert q.rate_limits.max_burst_size == 4
        assert q.rate_limits.max_concurrent_dispatches == 7
        assert q.retry_config.min_backoff.total_seconds() == 2
        assert q.retry_config.max_attempts == 4


def test_update_queue_creates_missing_queue(api: Api, parent: str) -> None:
    """UpdateQueue of a queue that does not exist creates it (documented)."""
    name = qname(parent)
    api.update_queue(queue=Queue(name=name, rate_limits=RateLimits(max_dispatches_per_second=3)))
    got = api.get_queue(name=name)
    assert got.rate_limits.max_dispatches_per_second == 3
    assert got.state == Queue.State.RUNNING


@diverges("accepts (and ignores) any field mask")
def test_update_queue_unknown_mask_is_invalid_argument(api: Api, parent: str) -> None:
    """A field mask naming no Queue field, or the state: INVALID_ARGUMENT."""
    queue = make_queue(api, parent)
    for path in ("rate_limits.nonsense", "state"):
        with pytest.raises(gexc.InvalidArgument):
            api.update_queue(queue=queue, update_mask=field_mask_pb2.FieldMask(paths=[path]))


@diverges("GetQueue of a deleted queue answers UNKNOWN; the name is not blocked")
def test_deleted_queue_name_is_blocked(api: Api, parent: str) -> None:
    """After DeleteQueue the queue is gone (NOT_FOUND) and its name cannot be created
    again for 7 days (FAILED_PRECONDITION)."""
    queue = make_queue(api, parent)
    api.delete_queue(name=queue.name)
    with pytest.raises(gexc.NotFound):
        api.get_queue(name=queue.name)
    with pytest.raises(gexc.FailedPrecondition):
        api.create_queue(parent=parent, queue=Queue(name=queue.name))


def test_pause_and_resume_set_state(api: Api, parent: str) -> None:
    """PauseQueue makes the queue PAUSED, ResumeQueue RUNNING again."""
    queue = make_queue(api, parent)
    assert api.pause_queue(name=queue.name).state == Queue.State.PAUSED
    assert api.get_queue(name=queue.name).state == Queue.State.PAUSED
    assert api.resume_queue(name=queue.name).state == Queue.State.RUNNING
    assert api.get_queue(name=queue.name).state == Queue.State.RUNNING


@diverges("Pause/Resume/Purge of a missing queue answer UNKNOWN; DeleteQueue succeeds")
@pytest.mark.parametrize("method", ["pause_queue", "resume_queue", "purge_queue", "delete_queue"])
def test_operations_on_missing_queue_are_not_found(api: Api, parent: str, method: str) -> None:
    """Pause, Resume, Purge and Delete of a missing queue: NOT_FOUND."""
    with pytest.raises(gexc.NotFound):
        getattr(api, method)(name=qname(parent))


@diverges("does not set purge_time")
def test_purge_deletes_tasks_and_sets_purge_time(api: Api, parent: str) -> None:
    """PurgeQueue deletes the queue's tasks and records purge_time."""
    queue = paused_queue(api, parent)
    for _ in range(3):
        api.create_task(parent=queue.name, task=http_task())
    before = time.time()
    purged = api.purge_queue(name=queue.name)
    assert purged.purge_time.timestamp() >= before - 1
    assert api.pages("list_tasks", parent=queue.name) == [[]]


@diverges("has no Locations service (UNIMPLEMENTED)")
def test_list_locations_lists_the_locations_in_use(api: Api, parent: str) -> None:
    """ListLocations of a project lists the locations holding its queues (the parent's among
    them), each named projects/P/locations/ID."""
    make_queue(api, parent)
    project = parent.split("/")[1]
    response = api.list_locations(name=f"projects/{project}")
    ids = [location.location_id for location in response.locations]
    assert parent.rsplit("/", 1)[1] in ids
    for location in response.locations:
        assert location.name == f"projects/{project}/locations/{location.location_id}"


@diverges("has no Locations service (UNIMPLEMENTED)")
def test_get_location(api: Api, parent: str) -> None:
    """GetLocation of projects/P/locations/L answers that location and its id."""
    location = api.get_location(name=parent)
    assert (location.name, location.location_id) == (parent, parent.rsplit("/", 1)[1])


# ---------------------------------------------------------------- tasks


def test_create_task_returns_the_task(api: Api, parent: str) -> None:
    """CreateTask returns the task: a generated name in the queue, its URL and method."""
    queue = paused_queue(api, parent)
    task = api.create_task(parent=queue.name, task=http_task())
    assert task.name.startswith(queue.name + "/tasks/")
    assert task.http_request.url == URL
    assert task.http_request.http_method == HttpMethod.POST


@diverges("leaves schedule_time, create_time and dispatch_deadline unset")
def test_create_task_fills_times(api: Api, parent: str) -> None:
    """An unscheduled task is due now; create_time is set; dispatch_deadline is 10 min."""
    queue = paused_queue(api, parent)
    before = time.time()
    task = api.create_task(parent=queue.name, task=http_task())
    assert before - 1 <= task.schedule_time.timestamp() <= time.time() + 1
    assert before - 1 <= task.create_time.timestamp() <= time.time() + 1
    assert task.dispatch_deadline.total_seconds() == 600


@diverges("returns the body in every view and leaves Task.view unset")
def test_basic_view_omits_body_full_view_has_it(api: Api, parent: str) -> None:
    """BASIC (the default) omits the body; FULL returns it (Create, Get and List)."""
    queue = paused_queue(api, parent)
    basic = api.create_task(parent=queue.name, task=http_task())
    assert basic.view == Task.View.BASIC
    assert basic.http_request.body == b""
    full = api.get_task(name=basic.name, response_view=Task.View.FULL)
    assert full.http_request.body == b"payload"
    assert api.get_task(name=basic.name).http_request.body == b""
    [[listed]] = api.pages("list_tasks", parent=queue.name, response_view=Task.View.FULL)
    assert listed.http_request.body == b"payload"


@diverges("does not de-duplicate task names")
def test_named_task_twice_is_already_exists(api: Api, parent: str) -> None:
    """A second task with the name of an existing one: ALREADY_EXISTS."""
    queue = paused_queue(api, parent)
    name = f"{queue.name}/tasks/order-7"
    assert api.create_task(parent=queue.name, task=http_task(name=name)).name == name
    with pytest.raises(gexc.AlreadyExists):
        api.create_task(parent=queue.name, task=http_task(name=name))


@diverges("has no DeleteTask (UNIMPLEMENTED) and no name de-duplication")
def test_deleted_task_name_stays_blocked(api: Api, parent: str) -> None:
    """After DeleteTask the name stays taken (about an hour): ALREADY_EXISTS."""
    queue = paused_queue(api, parent)
    name = f"{queue.name}/tasks/once"
    api.create_task(parent=queue.name, task=http_task(name=name))
    api.delete_task(name=name)
    with pytest.raises(gexc.AlreadyExists):
        api.create_task(parent=queue.name, task=http_task(name=name))


@diverges("answers FAILED_PRECONDITION, not NOT_FOUND, for a missing queue")
def test_create_task_in_missing_queue_is_not_found(api: Api, parent: str) -> None:
    """CreateTask in a queue that does not exist: NOT_FOUND."""
    with pytest.raises(gexc.NotFound):
        api.create_task(parent=qname(parent), task=http_task())


@diverges("accepts a schedule_time any distance ahead")
def test_schedule_beyond_30_days_is_invalid_argument(api: Api, parent: str) -> None:
    """schedule_time more than 30 days ahead: INVALID_ARGUMENT; 29 days is fine."""
    queue = paused_queue(api, parent)
    api.create_task(parent=queue.name, task=http_task(schedule_time=in_days(29)))
    with pytest.raises(gexc.InvalidArgument):
        api.create_task(parent=queue.name, task=http_task(schedule_time=in_days(31)))


@diverges("accepts tasks of any size")
def test_task_over_size_limit_is_invalid_argument(api: Api, parent: str) -> None:
    """A task bigger than the limit (100 KiB by default): INVALID_ARGUMENT."""
    queue = paused_queue(api, parent)
    big = HttpRequest(url=URL, body=b"x" * (101 * 1024))
    with pytest.raises(gexc.InvalidArgument):
        api.create_task(parent=queue.name, task=Task(http_request=big))


@diverges("accepts invalid HTTP requests")
@pytest.mark.parametrize(
    "request_",
    [
        HttpRequest(url="ftp://example.com/x"),
        HttpRequest(url="/relative"),
        HttpRequest(url=URL, http_method=HttpMethod.GET, body=b"no body on GET"),
    ],
    ids=["ftp-url", "relative-url", "get-with-body"],
)
def test_invalid_http_request_is_invalid_argument(
    api: Api, parent: str, request_: HttpRequest
) -> None:
    """A non-http(s) URL, or a body on GET: INVALID_ARGUMENT."""
    queue = paused_queue(api, parent)
    with pytest.raises(gexc.InvalidArgument):
        api.create_task(parent=queue.name, task=Task(http_request=request_))


@diverges("accepts a task named in another queue")
def test_task_named_in_other_queue_is_invalid_argument(api: Api, parent: str) -> None:
    """A task name outside the parent queue: INVALID_ARGUMENT."""
    queue = paused_queue(api, parent)
    other = paused_queue(api, parent)
    with pytest.raises(gexc.InvalidArgument):
        api.create_task(parent=queue.name, task=http_task(name=f"{other.name}/tasks/t1"))


@diverges("accepts any dispatch_deadline")
@pytest.mark.parametrize("seconds", [5, 3600])
def test_dispatch_deadline_out_of_range_is_invalid_argument(
    api: Api, parent: str, seconds: int
) -> None:
    """dispatch_deadline outside [15 s, 30 min]: INVALID_ARGUMENT."""
    queue = paused_queue(api, parent)
    task = http_task(dispatch_deadline=datetime.timedelta(seconds=seconds))
    with pytest.raises(gexc.InvalidArgument):
        api.create_task(parent=queue.name, task=task)


@diverges("has no GetTask (UNIMPLEMENTED)")
def test_get_missing_task_is_not_found(api: Api, parent: str) -> None:
    """GetTask of a task that does not exist: NOT_FOUND."""
    queue = paused_queue(api, parent)
    with pytest.raises(gexc.NotFound):
        api.get_task(name=f"{queue.name}/tasks/missing")


@diverges("ignores page_size of ListTasks")
def test_list_tasks_pages(api: Api, parent: str) -> None:
    """ListTasks with page_size 2 returns every task once, 2 per page."""
    queue = paused_queue(api, parent)
    names = {api.create_task(parent=queue.name, task=http_task()).name for _ in range(5)}
    pages = api.pages("list_tasks", parent=queue.name, page_size=2)
    assert [len(page) for page in pages] == [2, 2, 1]
    assert sorted(t.name for page in pages for t in page) == sorted(names)


@diverges("has no DeleteTask nor GetTask (UNIMPLEMENTED)")
def test_delete_task(api: Api, parent: str) -> None:
    """DeleteTask removes the task: GetTask and a second DeleteTask are NOT_FOUND."""
    queue = paused_queue(api, parent)
    task = api.create_task(parent=queue.name, task=http_task())
    api.delete_task(name=task.name)
    with pytest.raises(gexc.NotFound):
        api.get_task(name=task.name)
    with pytest.raises(gexc.NotFound):
        api.delete_task(name=task.name)


def test_run_task_dispatches_from_paused_queue(
    api: Api, parent: str, backend: RecordingBackend
) -> None:
    """RunTask delivers a task at once even though its queue is paused."""
    queue = paused_queue(api, parent)
    task = api.create_task(parent=queue.name, task=http_task(backend.url + "/run"))
    api.run_task(name=task.name)
    [received] = backend.wait_for_count(1, timeout=15)
    assert received.path == "/run"
    assert received.body == b"payload"


def test_run_missing_task_is_not_found(api: Api, parent: str) -> None:
    """RunTask of a task that does not exist: NOT_FOUND."""
    queue = paused_queue(api, parent)
    with pytest.raises(gexc.NotFound):
        api.run_task(name=f"{queue.name}/tasks/missing")


@diverges("has no GetTask (UNIMPLEMENTED); ignores retry config (retries every 0.1 s)")
def test_attempt_fields_are_kept(api: Api, parent: str, backend: RecordingBackend) -> None:
    """After one failed attempt (HTTP 500): dispatch_count 1, response_count 1,
    first_attempt and last_attempt set, status INTERNAL, next try after min_backoff."""
    backend.responder = lambda r: 500
    retry = RetryConfig(min_backoff=datetime.timedelta(seconds=300), max_attempts=5)
    queue = make_queue(api, parent, retry_config=retry)
    task = api.create_task(parent=queue.name, task=http_task(backend.url + "/fail"))
    backend.wait_for_count(1, timeout=15)

    def recorded() -> bool:
        return bool(api.get_task(name=task.name).response_count)

    wait_for(recorded, 15)
    got = api.get_task(name=task.name)
    api.pause_queue(name=queue.name)
    assert got.dispatch_count == 1
    assert got.response_count == 1
    assert got.first_attempt.dispatch_time.timestamp() > 0
    assert got.last_attempt.dispatch_time == got.first_attempt.dispatch_time
    assert got.last_attempt.response_status.code == 13  # INTERNAL for an HTTP 500
    delay = got.schedule_time.timestamp() - got.last_attempt.dispatch_time.timestamp()
    assert 299 <= delay <= 301
