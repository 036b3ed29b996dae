"""CloudTasksEngine against a real gRPC server (tests/support/fake_cloudtasks.py).

The fake answers like Cloud Tasks where the emulator cannot (ALREADY_EXISTS on a repeated
task name, server errors, slow answers); nothing in the client library is patched.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.cloud.tasks_v2 import HttpMethod

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.cloudtasks.engine import CloudTasksEngine
from proxy.envelope import Envelope
from proxy.errors import ConfigError, EngineUnavailableError, TaskRejectedError
from proxy.metrics import Metrics
from tests.support.fake_cloudtasks import FakeCloudTasks
from tests.support.servers import free_port

pytestmark = pytest.mark.anyio

PROJECT = "p1"
LOCATION = "europe-west1"
QUEUE_PATH = f"projects/{PROJECT}/locations/{LOCATION}/queues/orders"
TRANSIENT_CODES = [
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.INTERNAL,
]


def make_settings(host: str | None, **cloudtasks: Any) -> Settings:
    queue: dict[str, Any] = {"name": "orders", "target": "https://backend.example/api"}
    queue.update(cloudtasks.pop("queue", {}))
    return settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [queue],
            "cloudtasks": {
                "project": PROJECT,
                "location": LOCATION,
                **({"emulator_host": host} if host else {}),
                **cloudtasks,
            },
        }
    )


def envelope(**fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "id": "a1b2c3",
        "queue": "orders",
        "method": "POST",
        "path": "/orders/7",
        "query": "x=1&y=2",
        "headers": (("content-type", "application/json"), ("x-custom", "v")),
        "body": b'{"n": 1}',
        "received_at": time.time(),
    }
    values.update(fields)
    return Envelope(**values)


@pytest.fixture
async def engine(fake_cloudtasks: FakeCloudTasks) -> AsyncIterator[CloudTasksEngine]:
    """A started engine talking to the fake server, deadline 2 s (the default)."""
    started = CloudTasksEngine(make_settings(fake_cloudtasks.host), Metrics())
    await started.start()
    try:
        yield started
    finally:
        await started.aclose()


async def start_engine(settings: Settings, metrics: Metrics | None = None) -> CloudTasksEngine:
    engine = CloudTasksEngine(settings, metrics or Metrics())
    await engine.start()
    return engine


def rpc_errors(metrics: Metrics, method: str, code: str) -> float:
    value = metrics.registry.get_sample_value(
        "ingest_proxy_cloudtasks_rpc_errors_total", {"method": method, "code": code}
    )
    return value or 0.0


# ---------------------------------------------------------------- the task


async def test_task_carries_the_request(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """The task is a named HTTP task with the target URL, method, headers and body."""
    result = await engine.enqueue(envelope())
    assert (result.task_id, result.queue, result.duplicate) == ("a1b2c3", "orders", False)
    [request] = fake_cloudtasks.requests
    assert request.parent == QUEUE_PATH
    task = request.task
    assert task.name == f"{QUEUE_PATH}/tasks/a1b2c3"
    assert task.http_request.url == "https://backend.example/api/orders/7?x=1&y=2"
    assert task.http_request.http_method == HttpMethod.POST
    assert dict(task.http_request.headers) == {"content-type": "application/json", "x-custom": "v"}
    assert task.http_request.body == b'{"n": 1}'
    assert task.dispatch_deadline.total_seconds() == 600


async def test_create_task_carries_the_routing_header(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """CreateTask carries the x-goog-request-params routing header and x-goog-api-client."""
    await engine.enqueue(envelope())
    [metadata] = fake_cloudtasks.metadata
    assert metadata["x-goog-request-params"] == f"parent={QUEUE_PATH}"
    assert "gapic/" in metadata["x-goog-api-client"]


async def test_repeated_headers_are_comma_joined(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Headers sent twice reach Cloud Tasks as one comma-joined value."""
    await engine.enqueue(envelope(headers=(("accept", "a/b"), ("accept", "c/d"))))
    assert dict(fake_cloudtasks.requests[0].task.http_request.headers) == {"accept": "a/b, c/d"}


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
async def test_body_only_for_methods_that_carry_one(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks, method: str
) -> None:
    """GET, HEAD, DELETE and OPTIONS tasks have no body and keep their method."""
    await engine.enqueue(envelope(method=method, body=b""))
    http = fake_cloudtasks.requests[0].task.http_request
    assert http.http_method == getattr(HttpMethod, method)
    assert http.body == b""


async def test_no_oidc_token_without_a_service_account(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Without a service account the task carries no OIDC token."""
    await engine.enqueue(envelope())
    assert not fake_cloudtasks.requests[0].task.http_request.oidc_token.service_account_email


async def test_oidc_token_audience_is_the_target_origin(fake_cloudtasks: FakeCloudTasks) -> None:
    """With an engine-wide service account the audience is the target's scheme://host."""
    settings = make_settings(fake_cloudtasks.host, service_account_email="sa@p1.iam.example")
    engine = await start_engine(settings)
    try:
        await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    token = fake_cloudtasks.requests[0].task.http_request.oidc_token
    assert token.service_account_email == "sa@p1.iam.example"
    assert token.audience == "https://backend.example"


async def test_queue_oidc_settings_win(fake_cloudtasks: FakeCloudTasks) -> None:
    """A queue's own service account and audience override the engine-wide identity."""
    settings = make_settings(
        fake_cloudtasks.host,
        service_account_email="global@p1.iam.example",
        queue={"service_account_email": "q@p1.iam.example", "audience": "https://aud.example"},
    )
    engine = await start_engine(settings)
    try:
        await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    token = fake_cloudtasks.requests[0].task.http_request.oidc_token
    assert (token.service_account_email, token.audience) == (
        "q@p1.iam.example",
        "https://aud.example",
    )


async def test_schedule_time_and_dispatch_deadline(fake_cloudtasks: FakeCloudTasks) -> None:
    """schedule_time passes through to the microsecond; the queue's dispatch deadline too."""
    settings = make_settings(fake_cloudtasks.host, queue={"dispatch_deadline": "90s"})
    engine = await start_engine(settings)
    when = 1_900_000_000.123456
    try:
        await engine.enqueue(envelope(schedule_time=when))
    finally:
        await engine.aclose()
    task = fake_cloudtasks.requests[0].task
    assert abs(task.schedule_time.timestamp() - when) < 2e-6
    assert task.dispatch_deadline.total_seconds() == 90


async def test_no_schedule_time_means_now(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """An envelope without schedule_time leaves it unset (Cloud Tasks then uses now)."""
    await engine.enqueue(envelope())
    assert "schedule_time" not in fake_cloudtasks.requests[0].task


# ---------------------------------------------------------------- de-duplication


async def test_idempotency_key_repeat_is_a_duplicate(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """ALREADY_EXISTS on the first attempt of a keyed task: same id, duplicate=True."""
    first = await engine.enqueue(envelope(idempotency_key="order-7"))
    second = await engine.enqueue(envelope(idempotency_key="order-7"))
    assert (first.task_id, first.duplicate) == ("a1b2c3", False)
    assert (second.task_id, second.duplicate) == ("a1b2c3", True)
    assert len(fake_cloudtasks.tasks) == 1


async def test_already_exists_on_our_own_retry_is_success(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """ALREADY_EXISTS on a retry of our own lost answer is success, not a duplicate."""
    # The server stores the task, then answers UNAVAILABLE: the answer was lost.
    fake_cloudtasks.fail_next(1, grpc.StatusCode.UNAVAILABLE, after_store=True)
    result = await engine.enqueue(envelope(idempotency_key="order-8"))
    assert (result.task_id, result.duplicate) == ("a1b2c3", False)
    assert fake_cloudtasks.create_calls == 2
    assert len(fake_cloudtasks.tasks) == 1


async def test_generated_id_collision_is_503(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """ALREADY_EXISTS for a task without a key is no success: 503, retry with a new id."""
    await engine.enqueue(envelope())
    with pytest.raises(EngineUnavailableError) as caught:
        await engine.enqueue(envelope())
    assert caught.value.retry_after is not None


# ---------------------------------------------------------------- retries


@pytest.mark.parametrize("code", TRANSIENT_CODES, ids=lambda c: c.name)
async def test_transient_errors_are_retried(fake_cloudtasks: FakeCloudTasks, code: Any) -> None:
    """Two transient failures, then success: one stored task, three calls, two counted."""
    metrics = Metrics()
    engine = await start_engine(make_settings(fake_cloudtasks.host), metrics)
    fake_cloudtasks.fail_next(2, code)
    try:
        result = await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    assert (result.task_id, result.duplicate) == ("a1b2c3", False)
    assert fake_cloudtasks.create_calls == 3
    assert list(fake_cloudtasks.tasks) == [f"{QUEUE_PATH}/tasks/a1b2c3"]
    assert rpc_errors(metrics, "CreateTask", code.name) == 2


async def test_transient_errors_past_the_deadline_are_503(fake_cloudtasks: FakeCloudTasks) -> None:
    """Failing until the deadline gives EngineUnavailableError with Retry-After, nothing stored."""
    engine = await start_engine(make_settings(fake_cloudtasks.host, enqueue_deadline="2s"))
    fake_cloudtasks.fail_next(10_000, grpc.StatusCode.UNAVAILABLE)
    try:
        with pytest.raises(EngineUnavailableError) as caught:
            await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    assert caught.value.retry_after is not None
    assert caught.value.retry_after >= 1
    assert "UNAVAILABLE" in caught.value.detail
    assert fake_cloudtasks.create_calls >= 2
    assert fake_cloudtasks.tasks == {}


async def test_slow_answer_is_bounded_by_the_deadline(fake_cloudtasks: FakeCloudTasks) -> None:
    """A server that answers after the whole budget gives 503, not a hang and not a 202."""
    engine = await start_engine(make_settings(fake_cloudtasks.host, enqueue_deadline="0.5s"))
    fake_cloudtasks.delay_next(10, 30.0)
    try:
        with pytest.raises(EngineUnavailableError) as caught:
            await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    assert "DEADLINE_EXCEEDED" in caught.value.detail
    assert caught.value.retry_after is not None


async def test_nothing_listening_is_503() -> None:
    """With no server at the address, enqueue gives EngineUnavailableError in time."""
    engine = await start_engine(make_settings(f"127.0.0.1:{free_port()}", enqueue_deadline=0.5))
    try:
        with pytest.raises(EngineUnavailableError) as caught:
            await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    assert caught.value.retry_after is not None


# ---------------------------------------------------------------- refusals


async def test_task_too_large_is_413(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """INVALID_ARGUMENT "Task size too large" is a 413 TaskRejectedError, not retried."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, "Task size too large")
    with pytest.raises(TaskRejectedError) as caught:
        await engine.enqueue(envelope())
    assert (caught.value.status, caught.value.code) == (413, "task_too_large")
    assert fake_cloudtasks.create_calls == 1


async def test_other_invalid_argument_is_400(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Any other INVALID_ARGUMENT is a 400 TaskRejectedError carrying the reason."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, "Invalid header name")
    with pytest.raises(TaskRejectedError) as caught:
        await engine.enqueue(envelope())
    assert caught.value.status == 400
    assert "Invalid header name" in caught.value.detail
    assert fake_cloudtasks.create_calls == 1


@pytest.mark.parametrize("code", [grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION])
async def test_missing_or_disabled_queue_is_503(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks, code: Any
) -> None:
    """A missing, paused or disabled queue is a 503 that names the queue, not retried."""
    fake_cloudtasks.fail_next(1, code, "Queue does not exist.")
    with pytest.raises(EngineUnavailableError) as caught:
        await engine.enqueue(envelope())
    assert "'orders' is missing, paused or disabled" in caught.value.detail
    assert fake_cloudtasks.create_calls == 1


async def test_permission_denied_names_the_roles(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """PERMISSION_DENIED is a 503 that names the Enqueuer and Service Account User roles."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.PERMISSION_DENIED, "denied")
    with pytest.raises(EngineUnavailableError) as caught:
        await engine.enqueue(envelope())
    assert "roles/cloudtasks.enqueuer" in caught.value.detail
    assert "roles/iam.serviceAccountUser" in caught.value.detail


async def test_unauthenticated_names_the_role(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """UNAUTHENTICATED is a 503 that says the credentials were refused."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.UNAUTHENTICATED, "bad token")
    with pytest.raises(EngineUnavailableError) as caught:
        await engine.enqueue(envelope())
    assert "credentials" in caught.value.detail
    assert "roles/cloudtasks.enqueuer" in caught.value.detail


async def test_unknown_queue_is_404(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """An envelope for a queue that is not configured is refused with 404, as locally."""
    with pytest.raises(TaskRejectedError) as caught:
        await engine.enqueue(envelope(queue="nope"))
    assert (caught.value.status, caught.value.code) == (404, "unknown_queue")
    assert fake_cloudtasks.create_calls == 0


async def test_enqueue_before_start_is_503(fake_cloudtasks: FakeCloudTasks) -> None:
    """An engine that is not started refuses with 503 instead of crashing."""
    engine = CloudTasksEngine(make_settings(fake_cloudtasks.host), Metrics())
    with pytest.raises(EngineUnavailableError):
        await engine.enqueue(envelope())


# ---------------------------------------------------------------- readiness


async def test_ready_when_every_queue_answers(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """check_ready passes once GetQueue answers for the configured queue."""
    await engine.check_ready()
    assert fake_cloudtasks.get_queue_calls == 1


async def test_readiness_is_cached(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Probes in quick succession reuse one GetQueue answer."""
    for _ in range(5):
        await engine.check_ready()
    assert fake_cloudtasks.get_queue_calls == 1


async def test_not_ready_when_the_queue_is_missing(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """A missing queue makes check_ready raise, naming the queue."""
    fake_cloudtasks.missing_queues.add(QUEUE_PATH)
    with pytest.raises(EngineUnavailableError, match="'orders' does not exist"):
        await engine.check_ready()


async def test_ready_without_permission_to_read_queues(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """PERMISSION_DENIED on GetQueue still counts as reachable: Enqueuer cannot read queues."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.PERMISSION_DENIED, "no queues.get")
    await engine.check_ready()


async def test_not_ready_when_nothing_listens() -> None:
    """check_ready raises when the service cannot be reached."""
    engine = await start_engine(make_settings(f"127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(EngineUnavailableError, match="UNAVAILABLE"):
            await engine.check_ready()
    finally:
        await engine.aclose()


# ---------------------------------------------------------------- channel choice


async def test_emulator_host_needs_no_credentials(
    fake_cloudtasks: FakeCloudTasks, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With emulator_host the engine uses an insecure channel and never looks for credentials."""
    # Were credentials looked up, they would fail: the credentials file does not exist.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    engine = await start_engine(make_settings(fake_cloudtasks.host))
    try:
        await engine.enqueue(envelope())
    finally:
        await engine.aclose()
    assert len(fake_cloudtasks.tasks) == 1


async def test_without_emulator_host_google_credentials_are_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without emulator_host and without credentials, start fails with a config error."""
    # A missing credentials file stands in for Google's metadata server, which cannot run
    # here; the lookup stops at the file, so nothing leaves the machine.
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    engine = CloudTasksEngine(make_settings(None), Metrics())
    with pytest.raises(ConfigError, match="CLOUD_TASKS_EMULATOR_HOST"):
        await engine.start()


async def test_with_credentials_the_engine_starts_on_googles_endpoint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With credentials (an authorized-user file) the engine starts on Google's endpoint."""
    # No call is made: the channel connects lazily.
    credentials = tmp_path / "adc.json"
    credentials.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "id.apps.example",
                "client_secret": "secret",
                "refresh_token": "token",
            }
        )
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(credentials))
    engine = CloudTasksEngine(make_settings(None), Metrics())
    await engine.start()
    try:
        assert engine.endpoint == "cloudtasks.googleapis.com:443"
    finally:
        await engine.aclose()
