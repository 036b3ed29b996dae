"""The whole proxy with the Cloud Tasks engine: uvicorn on 127.0.0.1, the real
gcloud-tasks-emulator delivering to a real recording backend.

What the emulator cannot show (ALREADY_EXISTS on a repeated task name, a refused task)
runs against the fake gRPC server of tests/support/fake_cloudtasks.py instead.
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from tests.support.backend import RecordingBackend, run_backend
from tests.support.emulator import (
    LOCATION,
    PROJECT,
    Emulator,
    cloudtasks_proxy_settings,
    queue_path,
    running_emulator,
    unique_queue_name,
)
from tests.support.fake_cloudtasks import FakeCloudTasks
from tests.support.servers import run_proxy, wait_for

TIMEOUT = 30.0  # seconds for any one wait: generous, the machine may be busy


def status_of(client: httpx.Client, url: str) -> int:
    return client.get(url).status_code


def test_request_is_delivered_unchanged(emulator: Emulator, backend: RecordingBackend) -> None:
    """A POST is accepted (202) and delivered unchanged; hop-by-hop and credentials are not."""
    queue = unique_queue_name()
    emulator.create_queue(queue)
    body = b'{"order": 42, "items": ["a", "b"]}'
    with (
        run_proxy(
            cloudtasks_proxy_settings(target=backend.url, queue=queue, host=emulator.host)
        ) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        response = client.post(
            f"{proxy.url}/orders/42?x=1&y=two",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Custom": "hello",
                "X-Request-Id": "req-123",
                "Authorization": "Bearer secret",
                "Proxy-Authorization": "Basic c2VjcmV0",
                "Cookie": "session=s3cr3t",
                "Connection": "keep-alive, X-Hop",
                "X-Hop": "named in Connection",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "X-Delay": "0",
            },
        )
        assert response.status_code == 202, response.text
        answer = response.json()
        assert set(answer) == {"task", "queue"}
        assert answer["queue"] == queue
        assert response.headers["x-task-id"] == answer["task"]
        [received] = backend.wait_for_count(1, TIMEOUT)
    assert received.method == "POST"
    assert received.path == "/orders/42"
    assert received.query == "x=1&y=two"
    assert received.body == body
    assert received.header("content-type") == "application/json"
    assert received.header("x-custom") == "hello"
    assert received.header("x-request-id") == "req-123"
    assert received.header("x-forwarded-for") == "127.0.0.1"
    assert received.header("x-forwarded-proto") == "http"
    assert received.header("x-forwarded-host") == proxy.url.removeprefix("http://")
    assert received.header("x-cloudtasks-taskname") == answer["task"]
    # The emulator sends the full queue path; Cloud Tasks sends the short id.
    assert received.header("x-cloudtasks-queuename") == queue_path(queue)
    for name in (
        "authorization",
        "proxy-authorization",
        "cookie",
        "x-hop",
        "keep-alive",
        "te",
        "x-delay",
    ):
        assert received.header(name) is None, name
    # The emulator's own HTTP client (urllib) adds "Connection: close"; the client's
    # "keep-alive, X-Hop" must not be what arrives.
    assert received.header("connection") in (None, "close")


def test_outage_gives_503_then_recovers_without_restart(backend: RecordingBackend) -> None:
    """Emulator down: 503 + Retry-After, never 202; back up: 202 again, same proxy."""
    # /readyz follows: 503 while down, 200 once the emulator (and the queue) is back.
    queue = unique_queue_name()
    accepted: list[bytes] = []
    with running_emulator() as emulator:
        emulator.create_queue(queue)
        with (
            run_proxy(
                cloudtasks_proxy_settings(target=backend.url, queue=queue, host=emulator.host)
            ) as proxy,
            httpx.Client(timeout=TIMEOUT) as client,
        ):
            ready = f"{proxy.admin_url}/readyz"
            first = client.post(f"{proxy.url}/jobs", content=b"before")
            assert first.status_code == 202, first.text
            accepted.append(b"before")
            backend.wait_for_count(1, TIMEOUT)
            assert status_of(client, ready) == 200

            emulator.stop()
            for index in range(3):
                refused = client.post(f"{proxy.url}/jobs", content=f"down-{index}".encode())
                assert refused.status_code == 503, refused.text
                assert int(refused.headers["retry-after"]) >= 1
                assert refused.json()["error"] == "engine_unavailable"
            wait_for(
                lambda: status_of(client, ready) == 503,
                TIMEOUT,
                message="/readyz did not turn 503 while the emulator was down",
            )

            emulator.start()
            emulator.create_queue(queue)
            statuses: list[int] = []

            def accepted_again() -> bool:
                response = client.post(f"{proxy.url}/jobs", content=b"after")
                statuses.append(response.status_code)
                return response.status_code == 202

            wait_for(accepted_again, TIMEOUT, interval=0.1, message="no 202 after recovery")
            accepted.append(b"after")
            assert set(statuses) <= {202, 503}, statuses
            wait_for(
                lambda: status_of(client, ready) == 200,
                TIMEOUT,
                message="/readyz did not turn 200 after the emulator came back",
            )
            received = backend.wait_for_count(2, TIMEOUT)
    assert [r.body for r in received] == accepted


def test_readyz_follows_the_queue(emulator: Emulator, backend: RecordingBackend) -> None:
    """/readyz is 503 while the configured queue does not exist and 200 once it does."""
    queue = unique_queue_name()
    with (
        run_proxy(
            cloudtasks_proxy_settings(target=backend.url, queue=queue, host=emulator.host)
        ) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        ready = f"{proxy.admin_url}/readyz"
        response = client.get(ready)
        assert response.status_code == 503
        assert response.json()["error"] == "engine_unavailable"
        emulator.create_queue(queue)
        wait_for(lambda: status_of(client, ready) == 200, TIMEOUT, message="never ready")


def test_two_prefixes_reach_two_backends(emulator: Emulator, backend: RecordingBackend) -> None:
    """Routes /a -> queue one -> backend one and /b -> queue two -> backend two."""
    one, two = unique_queue_name("one"), unique_queue_name("two")
    emulator.create_queue(one)
    emulator.create_queue(two)
    with run_backend() as other:
        settings = settings_from_dict(
            {
                "engine": "cloudtasks",
                "queues": [
                    {"name": one, "target": backend.url},
                    {"name": two, "target": other.url},
                ],
                "routes": [{"prefix": "/a", "queue": one}, {"prefix": "/b", "queue": two}],
                "cloudtasks": {
                    "project": PROJECT,
                    "location": LOCATION,
                    "emulator_host": emulator.host,
                },
            }
        )
        with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as client:
            to_one = client.post(f"{proxy.url}/a/x", content=b"1")
            to_two = client.post(f"{proxy.url}/b/y", content=b"2")
            assert to_one.json()["queue"] == one
            assert to_two.json()["queue"] == two
            [at_one] = backend.wait_for_count(1, TIMEOUT)
            [at_two] = other.wait_for_count(1, TIMEOUT)
    assert (at_one.path, at_one.body) == ("/a/x", b"1")
    assert (at_two.path, at_two.body) == ("/b/y", b"2")
    assert [r.path for r in backend.received] == ["/a/x"]
    assert [r.path for r in other.received] == ["/b/y"]


# ---------------------------------------------------------------- against the fake server


def fake_settings(fake: FakeCloudTasks, **cloudtasks: Any) -> Settings:
    return settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [{"name": "orders", "target": "https://backend.example"}],
            "cloudtasks": {
                "project": PROJECT,
                "location": LOCATION,
                "emulator_host": fake.host,
                **cloudtasks,
            },
        }
    )


def test_idempotency_key_twice_is_one_task(fake_cloudtasks: FakeCloudTasks) -> None:
    """The same Idempotency-Key twice: one task, same id, second answer says duplicate."""
    # The gRPC test server answers ALREADY_EXISTS on a repeated name as Cloud Tasks does.
    with run_proxy(fake_settings(fake_cloudtasks)) as proxy, httpx.Client(timeout=TIMEOUT) as c:
        headers = {"Idempotency-Key": "order-42"}
        first = c.post(f"{proxy.url}/orders", content=b"a", headers=headers)
        second = c.post(f"{proxy.url}/orders", content=b"a", headers=headers)
        other = c.post(f"{proxy.url}/orders", content=b"a", headers={"Idempotency-Key": "x"})
    assert (first.status_code, second.status_code, other.status_code) == (202, 202, 202)
    assert first.json() == {"task": first.json()["task"], "queue": "orders"}
    assert second.json() == {"task": first.json()["task"], "queue": "orders", "duplicate": True}
    assert other.json()["task"] != first.json()["task"]
    task_id = first.json()["task"]
    assert set(fake_cloudtasks.tasks) == {
        f"{queue_path('orders')}/tasks/{task_id}",
        f"{queue_path('orders')}/tasks/{other.json()['task']}",
    }


def test_refused_task_is_a_json_4xx(fake_cloudtasks: FakeCloudTasks) -> None:
    """Cloud Tasks' "Task size too large" reaches the client as 413 with a JSON error."""
    fake_cloudtasks.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, "Task size too large")
    with run_proxy(fake_settings(fake_cloudtasks)) as proxy, httpx.Client(timeout=TIMEOUT) as c:
        response = c.post(f"{proxy.url}/orders", content=b"x" * 1000)
    assert response.status_code == 413
    assert response.json()["error"] == "task_too_large"


def test_failing_service_is_503_never_202(fake_cloudtasks: FakeCloudTasks) -> None:
    """Failing past the deadline gives 503 + Retry-After; the metric counts every attempt."""
    fake_cloudtasks.fail_next(10_000, grpc.StatusCode.UNAVAILABLE)
    settings = fake_settings(fake_cloudtasks, enqueue_deadline="0.5s")
    with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as c:
        response = c.post(f"{proxy.url}/orders", content=b"x")
        metrics = c.get(f"{proxy.admin_url}/metrics").text
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert fake_cloudtasks.tasks == {}
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("ingest_proxy_cloudtasks_rpc_errors_total{")
        and 'code="UNAVAILABLE"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == fake_cloudtasks.create_calls


@pytest.mark.parametrize(
    ("headers", "body", "status", "error"),
    [
        ({}, b"x" * (100 * 1024 + 1), 413, "body_too_large"),
        ({"X-Delay": "soon"}, b"x", 400, "invalid_delay"),
        ({"Idempotency-Key": "k" * 256}, b"x", 400, "invalid_idempotency_key"),
    ],
    ids=["oversized-body", "bad-delay", "long-idempotency-key"],
)
def test_bad_input_is_refused_before_any_task(
    fake_cloudtasks: FakeCloudTasks,
    headers: dict[str, str],
    body: bytes,
    status: int,
    error: str,
) -> None:
    """Oversized bodies and bad control headers get a JSON 4xx and create no task."""
    with run_proxy(fake_settings(fake_cloudtasks)) as proxy, httpx.Client(timeout=TIMEOUT) as c:
        response = c.post(f"{proxy.url}/orders", content=body, headers=headers)
        accepted = c.post(f"{proxy.url}/orders", content=b"fine")
    assert response.status_code == status
    assert response.json()["error"] == error
    assert accepted.status_code == 202
    assert fake_cloudtasks.create_calls == 1
