"""Delivery by cloudtasks-server, as Cloud Tasks documents it: headers, the local OIDC
token, retries and their headers, the concurrency cap, the rate, exhaustion, pausing.
Real server (thread), real recording backend, real time (bounded waits).
"""

from __future__ import annotations

import base64
import datetime
import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import httpx
import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import (
    CloudTasksClient,
    HttpRequest,
    OidcToken,
    Queue,
    RateLimits,
    RetryConfig,
    Task,
)
from google.oauth2 import id_token

from tests.support.backend import RecordingBackend
from tests.support.cloudtasks_server import ServerThread, run_server, sync_client
from tests.support.servers import wait_for

PARENT = "projects/p/locations/l"
WAIT = 20.0  # seconds for any one wait


@pytest.fixture
def client(local_server: ServerThread) -> Iterator[CloudTasksClient]:
    """The sync client on our server."""
    client, channel = sync_client(local_server.host)
    yield client
    channel.close()


def new_queue(client: CloudTasksClient, **fields: Any) -> str:
    name = f"{PARENT}/queues/d-{uuid.uuid4().hex[:10]}"
    client.create_queue(parent=PARENT, queue=Queue(name=name, **fields))
    return name


def backoff(seconds: float, attempts: int = 100) -> RetryConfig:
    return RetryConfig(
        min_backoff=datetime.timedelta(seconds=seconds),
        max_backoff=datetime.timedelta(seconds=seconds),
        max_attempts=attempts,
    )


def claims(authorization: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    assert authorization is not None
    assert authorization.startswith("Bearer ")
    header, payload, signature = authorization.removeprefix("Bearer ").split(".")

    def decode(part: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        return data

    return decode(header), decode(payload), signature


def test_headers_and_local_oidc_token(
    client: CloudTasksClient, backend: RecordingBackend, local_server: ServerThread
) -> None:
    """The backend gets the short queue and task ids, Google-Cloud-Tasks as User-Agent, and
    an RS256 token signed by the server's key (iss: its REST address, aud as set)
    replacing any Authorization header, which google-auth verifies from the server's JWK
    set alone, and from its v1 certs; Host and X-Google-* headers are not sent."""
    queue = new_queue(client)
    request = HttpRequest(
        url=backend.url + "/hook?x=1",
        body=b"{}",
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer mine",
            "X-Google-Thing": "no",
            "X-Custom": "yes",
        },
        oidc_token=OidcToken(
            service_account_email="sa@p.iam.gserviceaccount.com", audience="https://backend.example"
        ),
    )
    client.create_task(parent=queue, task=Task(name=f"{queue}/tasks/t-1", http_request=request))
    [got] = backend.wait_for_count(1, WAIT)
    assert (got.method, got.path, got.query, got.body) == ("POST", "/hook", "x=1", b"{}")
    assert got.header("x-cloudtasks-queuename") == queue.rsplit("/", 1)[1]
    assert got.header("x-cloudtasks-taskname") == "t-1"
    assert got.header("x-cloudtasks-taskretrycount") == "0"
    assert got.header("x-cloudtasks-taskexecutioncount") == "0"
    assert got.header("user-agent") == "Google-Cloud-Tasks"
    assert got.header("x-custom") == "yes"
    assert got.header("x-google-thing") is None
    header, payload, signature = claims(got.header("authorization"))
    assert header["alg"] == "RS256"
    assert signature
    base = f"http://{local_server.rest_host}"
    assert payload["iss"] == base
    assert payload["email"] == "sa@p.iam.gserviceaccount.com"
    token = (got.header("authorization") or "").removeprefix("Bearer ")
    discovery = httpx.get(f"{base}/.well-known/openid-configuration", timeout=10).json()
    assert discovery["issuer"] == base
    for certs_url in (discovery["jwks_uri"], f"{base}/oauth2/v1/certs"):
        verified = id_token.verify_token(
            token, google.auth.transport.requests.Request(), "https://backend.example", certs_url
        )
        assert verified["email"] == "sa@p.iam.gserviceaccount.com"
        assert verified["email_verified"] is True


def test_a_token_for_another_audience_does_not_verify(
    client: CloudTasksClient, backend: RecordingBackend, local_server: ServerThread
) -> None:
    """google-auth refuses the server's token for any audience but the task's."""
    queue = new_queue(client)
    token = OidcToken(service_account_email="sa@p.iam.gserviceaccount.com", audience="https://a")
    client.create_task(
        parent=queue, task=Task(http_request=HttpRequest(url=backend.url, oidc_token=token))
    )
    [got] = backend.wait_for_count(1, WAIT)
    jwt_text = (got.header("authorization") or "").removeprefix("Bearer ")
    with pytest.raises(ValueError, match="audience"):
        id_token.verify_token(
            jwt_text,
            google.auth.transport.requests.Request(),
            "https://b",
            f"http://{local_server.rest_host}/oauth2/v1/certs",
        )


def test_the_signing_key_is_made_once_kept_private_and_reused(tmp_path: Path) -> None:
    """The first start writes <db>.signing-key.pem (mode 0600); a restart signs with the
    same key (same key id); with --unsigned-tokens the old unsigned stand-ins are sent."""
    db = tmp_path / "tasks.db"
    with run_server(db, rest_port=0) as server:
        first = httpx.get(f"http://{server.rest_host}/oauth2/v3/certs", timeout=10).json()
    key = Path(f"{db}.signing-key.pem")
    assert key.stat().st_mode & 0o777 == 0o600
    with run_server(db, rest_port=0) as server:
        second = httpx.get(f"http://{server.rest_host}/oauth2/v3/certs", timeout=10).json()
    assert first == second
    assert len(first["keys"]) == 1
    with run_server(db, unsigned_tokens=True) as server:
        assert server.server is not None
        token = server.server.runtime.token(
            json.dumps({"kind": "oidc", "email": "a@b", "audience": "https://x"}), 0.0
        )
    header, payload, signature = claims("Bearer " + token)
    assert (header["alg"], signature, payload["iss"]) == ("none", "", "ingest-proxy-local")


def test_oidc_audience_defaults_to_url(client: CloudTasksClient, backend: RecordingBackend) -> None:
    """Without an audience, the token's aud is the task's URL (as Cloud Tasks does)."""
    queue = new_queue(client)
    url = backend.url + "/a?b=c"
    token = OidcToken(service_account_email="sa@p.iam.gserviceaccount.com")
    client.create_task(parent=queue, task=Task(http_request=HttpRequest(url=url, oidc_token=token)))
    [got] = backend.wait_for_count(1, WAIT)
    assert claims(got.header("authorization"))[1]["aud"] == url


def test_retry_headers_and_counts(client: CloudTasksClient, backend: RecordingBackend) -> None:
    """A 500 then a 200: the retry carries RetryCount 1, ExecutionCount 0 (5xx excluded)
    and PreviousResponse 500; the task is then gone."""
    answers = iter([500, 200])
    backend.responder = lambda r: next(answers)
    queue = new_queue(client, retry_config=backoff(0.2))
    task = client.create_task(parent=queue, task=Task(http_request=HttpRequest(url=backend.url)))
    first, second = backend.wait_for_count(2, WAIT)
    assert first.header("x-cloudtasks-taskpreviousresponse") is None
    assert second.header("x-cloudtasks-taskretrycount") == "1"
    assert second.header("x-cloudtasks-taskexecutioncount") == "0"
    assert second.header("x-cloudtasks-taskpreviousresponse") == "500"
    assert second.header("x-cloudtasks-taskretryreason") == ""
    assert second.at - first.at >= 0.19

    def gone() -> bool:
        try:
            client.get_task(name=task.name)
        except gexc.NotFound:
            return True
        return False

    wait_for(gone, WAIT)


def test_concurrency_cap_is_held(client: CloudTasksClient, backend: RecordingBackend) -> None:
    """With max_concurrent_dispatches 2, never more than 2 attempts are in flight."""
    backend.delay = 0.3
    queue = new_queue(client, rate_limits=RateLimits(max_concurrent_dispatches=2))
    for _ in range(8):
        client.create_task(parent=queue, task=Task(http_request=HttpRequest(url=backend.url)))
    backend.wait_for_count(8, WAIT)
    assert backend.max_in_flight == 2


def test_rate_limit_spaces_dispatches(client: CloudTasksClient, backend: RecordingBackend) -> None:
    """At 5/s (burst 1) 11 tasks take at least 2 s to be dispatched."""
    queue = new_queue(client, rate_limits=RateLimits(max_dispatches_per_second=5))
    client.pause_queue(name=queue)
    for _ in range(11):
        client.create_task(parent=queue, task=Task(http_request=HttpRequest(url=backend.url)))
    client.resume_queue(name=queue)
    got = backend.wait_for_count(11, WAIT)
    assert got[-1].at - got[0].at >= 2.0 * 0.95


def test_exhausted_task_is_deleted_and_its_name_blocked(
    client: CloudTasksClient, backend: RecordingBackend
) -> None:
    """After max_attempts failures the task is deleted (no more attempts) and its name
    stays taken (ALREADY_EXISTS)."""
    backend.responder = lambda r: 500
    queue = new_queue(client, retry_config=backoff(0.1, attempts=2))
    name = f"{queue}/tasks/doomed"
    task = Task(name=name, http_request=HttpRequest(url=backend.url))
    client.create_task(parent=queue, task=task)
    backend.wait_for_count(2, WAIT)

    def gone() -> bool:
        try:
            client.get_task(name=name)
        except gexc.NotFound:
            return True
        return False

    wait_for(gone, WAIT)
    time.sleep(0.5)  # a third attempt would be due 0.1 s after the second
    assert len(backend.received) == 2
    with pytest.raises(gexc.AlreadyExists):
        client.create_task(
            parent=queue, task=Task(name=name, http_request=HttpRequest(url="http://x"))
        )


def test_paused_queue_holds_tasks_until_resumed(
    client: CloudTasksClient, backend: RecordingBackend
) -> None:
    """A paused queue accepts tasks but dispatches none until ResumeQueue."""
    queue = new_queue(client)
    client.pause_queue(name=queue)
    for _ in range(3):
        client.create_task(parent=queue, task=Task(http_request=HttpRequest(url=backend.url)))
    time.sleep(0.5)
    assert backend.received == []
    client.resume_queue(name=queue)
    backend.wait_for_count(3, WAIT)


def test_schedule_time_is_respected(client: CloudTasksClient, backend: RecordingBackend) -> None:
    """A task scheduled 1.5 s ahead is not dispatched before then; its ETA header says when."""
    queue = new_queue(client)
    when = time.time() + 1.5
    schedule = datetime.datetime.fromtimestamp(when, tz=datetime.UTC)
    mono_minus_wall = time.monotonic() - time.time()
    task = Task(http_request=HttpRequest(url=backend.url), schedule_time=schedule)
    client.create_task(parent=queue, task=task)
    [got] = backend.wait_for_count(1, WAIT)
    assert got.at >= when + mono_minus_wall - 0.05
    assert float(got.header("x-cloudtasks-tasketa") or 0) == pytest.approx(when, abs=1e-3)


def test_dispatch_deadline_ends_an_attempt(client: CloudTasksClient) -> None:
    """An attempt with no answer within the task's dispatch_deadline (15 s, the minimum)
    fails: last_attempt DEADLINE_EXCEEDED, no response counted, next try after backoff.
    (About 15 s of real time: the deadline cannot be shorter.)"""
    with socket.socket() as silent:  # accepts connections (backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/slow"
        queue = new_queue(client, retry_config=backoff(300))
        deadline = datetime.timedelta(seconds=15)
        task = Task(http_request=HttpRequest(url=url), dispatch_deadline=deadline)
        name = client.create_task(parent=queue, task=task).name
        started = time.monotonic()

        def timed_out() -> bool:
            return client.get_task(name=name).last_attempt.response_status.code == 4

        wait_for(timed_out, 15 + WAIT, interval=0.1)
        elapsed = time.monotonic() - started
    got = client.get_task(name=name)
    assert elapsed >= 14.5
    assert (got.dispatch_count, got.response_count) == (1, 0)
    assert got.last_attempt.response_time is None
    delay = got.schedule_time.timestamp() - got.last_attempt.dispatch_time.timestamp()
    assert 314 <= delay <= 316  # 15 s deadline + 300 s backoff after the failure
