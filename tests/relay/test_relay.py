"""The Cloud Tasks delivery relay end to end: the proxy (Cloud Tasks engine, relay mode)
on 127.0.0.1, our cloudtasks-server playing Cloud Tasks with its signed OIDC tokens, and a
real recording backend. Nothing is mocked; every wait is bounded.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import google.auth.transport.requests
import httpx
import pytest
from google.oauth2 import id_token
from prometheus_client.parser import text_string_to_metric_families

from proxy.cloudtasks_server.signing import LocalSigner
from tests.support.backend import Received, RecordingBackend, run_backend
from tests.support.cloudtasks_server import ServerThread, run_server, sync_client
from tests.support.google_identity import EMAIL, IdentityServer, run_identity_server
from tests.support.relay import (
    ADMIN,
    ADMIN_TOKEN,
    INVOKER,
    LOCATION,
    PROJECT,
    relay_settings,
    run_relay_proxy,
)
from tests.support.servers import free_port, wait_for

WAIT = 30.0  # seconds for any one wait: generous, the machine is shared
ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = {"max_attempts": 2, "min_backoff": "0.1s", "max_backoff": "0.1s"}


@pytest.fixture(scope="module")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with run_server(tmp_path_factory.mktemp("relay") / "tasks.db", rest_port=0) as server:
        yield server


def _signer(server: ServerThread) -> LocalSigner:
    assert server.server is not None
    assert server.server.runtime.signer is not None
    return server.server.runtime.signer


def _dead_letters(client: httpx.Client, admin_url: str, queue: str) -> list[dict[str, Any]]:
    answer = client.get(f"{admin_url}/queues/{queue}/dead-letters", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    letters: list[dict[str, Any]] = answer.json()["dead_letters"]
    return letters


def _dead_letter_count(client: httpx.Client, admin_url: str, queue: str) -> int | None:
    """The dead-letter count GET /queues/{queue} reports."""
    answer = client.get(f"{admin_url}/queues/{queue}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    count: int | None = answer.json()["dead_letters"]
    return count


def test_a_task_out_of_attempts_is_a_dead_letter_and_a_replay_delivers_it_once(
    local_server: ServerThread, tmp_path: Path
) -> None:
    """A backend that always fails: after max_attempts (2) the task is in
    <queue>-dead-letters with its last status and answer; `ingest-proxy dlq replay` puts
    it back, and the now healthy backend gets it once; the dead-letter queue is empty."""
    healthy = {"yes": False}

    def answer(request: Received) -> tuple[int, dict[str, str], bytes]:
        return (200, {}, b"ok") if healthy["yes"] else (500, {}, b"backend is down")

    queue = "dlq-one"
    with run_backend(RecordingBackend(responder=answer)) as backend:
        settings = relay_settings(
            local_server,
            [{"name": queue, "target": backend.url, "retry": FAST_RETRY}],
            port=free_port(),
        )
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            sent = client.post(f"{proxy.url}/orders/7?src=web", content=b'{"id": 7}')
            assert sent.status_code == 202, sent.text
            task_id = sent.json()["task"]
            wait_for(lambda: len(_dead_letters(client, proxy.admin_url, queue)) == 1, WAIT)
            [letter] = _dead_letters(client, proxy.admin_url, queue)
            assert letter["id"] == task_id
            assert (letter["method"], letter["path"], letter["query"]) == (
                "POST", "/orders/7", "src=web",
            )  # fmt: skip
            assert letter["last_status"] == 500
            assert letter["attempts"] == 2
            assert letter["response_snippet"] == "backend is down"
            assert len(backend.received) == 2  # both attempts reached the backend

            healthy["yes"] = True
            replay = subprocess.run(
                [sys.executable, "-m", "proxy", "dlq", "replay", queue, task_id,
                 "--admin-url", proxy.admin_url],
                env={"INGEST_PROXY_ADMIN_TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"},
                cwd=ROOT, capture_output=True, timeout=WAIT, check=False,
            )  # fmt: skip
            assert replay.returncode == 0, replay.stderr
            received = backend.wait_for_count(3, WAIT)
            assert received[2].path == "/orders/7"
            assert received[2].body == b'{"id": 7}'
            assert received[2].header("x-cloudtasks-taskname") == f"{task_id}-r1"
            assert _dead_letters(client, proxy.admin_url, queue) == []
            # The replayed task succeeded, so Cloud Tasks holds nothing more to deliver.
            tasks_client, channel = sync_client(local_server.host)
            path = f"projects/{PROJECT}/locations/{LOCATION}/queues/{queue}"
            wait_for(lambda: not list(tasks_client.list_tasks(parent=path)), WAIT)
            channel.close()
        assert len(backend.received) == 3


def test_dead_letters_are_dropped_and_replayed_all_through_the_admin_api(
    local_server: ServerThread,
) -> None:
    """Two dead letters: one dropped (DELETE), the other replayed with replay-all."""
    queue = "dlq-two"
    with run_backend(RecordingBackend(responder=lambda r: 503)) as backend:
        settings = relay_settings(
            local_server,
            [{"name": queue, "target": backend.url, "retry": {**FAST_RETRY, "max_attempts": 1}}],
            port=free_port(),
        )
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            ids = [client.post(f"{proxy.url}/x{n}").json()["task"] for n in range(2)]
            wait_for(lambda: len(_dead_letters(client, proxy.admin_url, queue)) == 2, WAIT)
            assert _dead_letter_count(client, proxy.admin_url, queue) == 2
            dropped = client.delete(
                f"{proxy.admin_url}/queues/{queue}/dead-letters/{ids[0]}", headers=ADMIN
            )
            assert dropped.status_code in (200, 204), dropped.text
            assert [d["id"] for d in _dead_letters(client, proxy.admin_url, queue)] == [ids[1]]
            assert _dead_letter_count(client, proxy.admin_url, queue) == 1
            backend.responder = lambda r: 200
            replayed = client.post(
                f"{proxy.admin_url}/queues/{queue}/dead-letters/replay", headers=ADMIN
            )
            assert replayed.status_code == 200, replayed.text
            assert replayed.json()["replayed"] == 1
            received = backend.wait_for_count(3, WAIT)
            assert received[2].path == "/x1"
            assert _dead_letters(client, proxy.admin_url, queue) == []


@pytest.mark.parametrize("own_port", [False, True], ids=["reserved-path", "own-port"])
def test_a_request_without_a_good_token_is_refused_and_nothing_is_forwarded(
    local_server: ServerThread, own_port: bool, tmp_path: Path
) -> None:
    """Missing, malformed, expired, another audience, another issuer's key, another email:
    401 or 403 at the relay, on its reserved path and on its own port alike; the
    backend never hears of it. A good token for another path's queue gets 404."""
    queue = "auth-q"
    with run_backend() as backend:
        settings = relay_settings(
            local_server,
            [{"name": queue, "target": backend.url}],
            port=free_port(),
            relay_port=free_port() if own_port else None,
        )
        signer = _signer(local_server)
        audience = settings.cloudtasks.relay_token_audience
        now = time.time()

        def token(email: str = INVOKER, aud: str = audience, at: float = now) -> str:
            spec = {"kind": "oidc", "email": email, "audience": aud}
            return signer.token(json.dumps(spec), at)

        stranger = LocalSigner(tmp_path / "stranger.pem", signer.issuer)  # another key
        cases = {
            "missing": (None, 401),
            "not bearer": ("Basic " + token(), 401),
            "garbage": ("Bearer not-a-jwt", 401),
            "expired": ("Bearer " + token(at=now - 7300), 401),
            "other audience": ("Bearer " + token(aud="https://elsewhere.example"), 401),
            "other signer": (
                "Bearer "
                + stranger.token(
                    json.dumps({"kind": "oidc", "email": INVOKER, "audience": audience}), now
                ),
                401,
            ),
            "other email": ("Bearer " + token(email="intruder@evil.example"), 403),
        }
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            url = f"{proxy.relay_url}/{queue}/work"
            headers = {"X-CloudTasks-QueueName": queue, "X-CloudTasks-TaskName": "t1"}
            for case, (authorization, status) in cases.items():
                sent = dict(headers)
                if authorization is not None:
                    sent["Authorization"] = authorization
                answer = client.post(url, content=b"body", headers=sent)
                assert answer.status_code == status, (case, answer.text)
                assert answer.json()["error"], case
                assert "eyJ" not in answer.text, case  # no token in the answer
            good = {**headers, "Authorization": "Bearer " + token()}
            unknown = client.post(f"{proxy.relay_url}/nope/work", headers=good)
            assert unknown.status_code == 404
            assert unknown.json()["error"] == "unknown_queue"
            ok = client.post(url, content=b"body", headers=good)
            assert ok.status_code == 200, ok.text
        assert [r.path for r in backend.received] == ["/work"]  # only the good one


@pytest.fixture
def identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IdentityServer]:
    """The proxy's own Google identity: a key file whose token_uri is the local stand-in
    of Google's token endpoint (Google's cannot run here)."""
    with run_identity_server() as server:
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(server.key_file(tmp_path)))
        yield server


def _claims(token: str, certs_url: str, audience: str) -> dict[str, Any]:
    """What a backend does with the token: google-auth checks signature, aud and exp."""
    request = google.auth.transport.requests.Request()
    claims: dict[str, Any] = id_token.verify_token(token, request, audience, certs_url)
    return claims


def test_the_backend_gets_the_same_request_with_and_without_the_relay(
    local_server: ServerThread, identity: IdentityServer
) -> None:
    """One proxy, two queues to the same private backend, one in relay mode: the two
    deliveries of the same request carry the same method, query, body and headers (but the
    per-task X-CloudTasks-* values), and each an ID token for the backend of the queue's
    service account: Cloud Tasks' own without the relay, the proxy's (google-auth) with it."""
    with run_backend() as backend:
        private = {"target": backend.url, "service_account_email": EMAIL}
        queues = [{"name": "direct", "relay": False, **private}, {"name": "relayed", **private}]
        routes = [{"prefix": "/a", "queue": "direct"}, {"prefix": "/b", "queue": "relayed"}]
        settings = relay_settings(local_server, queues, port=free_port(), routes=routes)
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            for prefix in ("/a", "/b"):
                sent = client.put(
                    f"{proxy.url}{prefix}/item?k=v&k=w",
                    content=b"same body",
                    headers={"Content-Type": "text/plain", "X-Custom": "1", "X-Request-Id": "r"},
                )
                assert sent.status_code == 202, sent.text
            received = backend.wait_for_count(2, WAIT)
            metrics = client.get(f"{proxy.admin_url}/metrics").text
    # The relayed delivery went through the relay (which counts it), the other did not.
    assert 'ingest_proxy_dispatches_total{queue="relayed",status_class="2xx"} 1.0' in metrics
    assert 'ingest_proxy_dispatches_total{queue="direct"' not in metrics
    direct, relayed = sorted(received, key=lambda r: r.path)
    assert (direct.method, direct.query, direct.body) == (
        relayed.method,
        relayed.query,
        relayed.body,
    )
    assert direct.path == "/a/item"
    assert relayed.path == "/b/item"
    differ = {"x-cloudtasks-queuename", "x-cloudtasks-taskname", "x-cloudtasks-tasketa"}

    def comparable(request: Received) -> list[tuple[str, str]]:
        return sorted((k, v) for k, v in request.headers if k not in differ | {"authorization"})

    assert comparable(direct) == comparable(relayed)
    assert relayed.header("x-cloudtasks-queuename") == "relayed"
    assert relayed.header("user-agent") == "Google-Cloud-Tasks"
    audience = backend.url  # the target's origin, the default audience
    direct_token = (direct.header("authorization") or "").removeprefix("Bearer ")
    relayed_token = (relayed.header("authorization") or "").removeprefix("Bearer ")
    cloud_tasks = _claims(
        direct_token, f"http://{local_server.rest_host}/oauth2/v1/certs", audience
    )
    proxy_made = _claims(relayed_token, f"{identity.url}/certs", audience)
    assert (cloud_tasks["email"], proxy_made["email"]) == (EMAIL, EMAIL)
    assert proxy_made["iss"] == "https://accounts.google.com"
    assert identity.fetches["token_uri"] == 1


def test_the_dashboards_delivery_panels_have_data_in_relay_mode(
    local_server: ServerThread,
) -> None:
    """After a success and a dead letter through the relay, /metrics has the series every
    delivery panel of the dashboard queries, for the queue, with data."""
    queue = "metered"
    responder = lambda r: 500 if r.path == "/fail" else 200  # noqa: E731
    with run_backend(RecordingBackend(responder=responder)) as backend:
        settings = relay_settings(
            local_server,
            [{"name": queue, "target": backend.url, "retry": {**FAST_RETRY, "max_attempts": 1}}],
            port=free_port(),
        )
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            assert client.post(f"{proxy.url}/ok").status_code == 202
            assert client.post(f"{proxy.url}/fail").status_code == 202
            backend.wait_for_count(2, WAIT)
            wait_for(lambda: len(_dead_letters(client, proxy.admin_url, queue)) == 1, WAIT)
            metrics_url = f"{proxy.admin_url}/metrics"
            wait_for(lambda: f'ingest_proxy_dead_letters{{queue="{queue}"}} 1.0'
                     in client.get(metrics_url).text, WAIT)  # fmt: skip
            text = client.get(metrics_url).text
    samples = {
        (s.name, s.labels.get("status_class", ""), s.labels.get("le", "")): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("queue") == queue
    }
    assert samples[("ingest_proxy_dispatches_total", "2xx", "")] == 1
    assert samples[("ingest_proxy_dispatches_total", "5xx", "")] == 1
    assert samples[("ingest_proxy_delivery_seconds_count", "", "")] == 2
    assert samples[("ingest_proxy_task_attempts_count", "", "")] == 2
    assert samples[("ingest_proxy_task_attempts_bucket", "", "1.0")] == 2
    assert samples[("ingest_proxy_dead_letters", "", "")] == 1
    dashboard = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    delivery = {"ingest_proxy_dispatches_total", "ingest_proxy_delivery_seconds",
                "ingest_proxy_task_attempts", "ingest_proxy_dead_letters"}  # fmt: skip
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in delivery
        if name in target["expr"]
    }
    assert queried == delivery  # the panels this test stands for
    present = {name for name, _, _ in samples}
    for name in queried:
        assert any(p == name or p.startswith(name + "_") for p in present), name


def _good_token(server: ServerThread, audience: str) -> str:
    spec = {"kind": "oidc", "email": INVOKER, "audience": audience}
    return "Bearer " + _signer(server).token(json.dumps(spec), time.time())


def test_retry_after_goes_back_as_sent_and_an_unreachable_backend_is_a_5xx(
    local_server: ServerThread,
) -> None:
    """A backend's 429 and 503 with Retry-After (seconds or an HTTP date) reach Cloud
    Tasks with that header unchanged; a 4xx keeps its status; a backend that cannot be
    reached gives 502: Cloud Tasks retries all of them as its RetryConfig says (these are
    not last attempts)."""
    date = "Wed, 21 Oct 2037 07:28:00 GMT"
    answers = {
        "/busy": (429, {"Retry-After": "120"}),
        "/down": (503, {"Retry-After": date}),
        "/bad": (404, {}),
    }
    with run_backend(RecordingBackend(responder=lambda r: answers[r.path])) as backend:
        queues = [
            {"name": "live", "target": backend.url},
            {"name": "gone", "target": f"http://127.0.0.1:{free_port()}"},
        ]
        settings = relay_settings(local_server, queues, port=free_port())
        good = _good_token(local_server, settings.cloudtasks.relay_token_audience)
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:

            def deliver(queue: str, path: str) -> httpx.Response:
                headers = {
                    "Authorization": good,
                    "X-CloudTasks-QueueName": queue,
                    "X-CloudTasks-TaskName": "t",
                    "X-CloudTasks-TaskRetryCount": "0",
                }
                return client.post(f"{proxy.relay_url}/{queue}{path}", headers=headers)

            busy, down, bad = (deliver("live", path) for path in ("/busy", "/down", "/bad"))
            assert (busy.status_code, busy.headers["retry-after"]) == (429, "120")
            assert (down.status_code, down.headers["retry-after"]) == (503, date)
            assert bad.status_code == 404
            assert "retry-after" not in bad.headers
            unreachable = deliver("gone", "/x")
            assert unreachable.status_code == 502
            assert _dead_letters(client, proxy.admin_url, "gone") == []
        assert [r.path for r in backend.received] == ["/busy", "/down", "/bad"]


def test_max_retry_duration_is_measured_from_the_first_attempt(
    local_server: ServerThread,
) -> None:
    """With unlimited attempts and a retry duration of 3 s, the relay reads the task's
    first dispatch time (GetTask) and keeps the task as a dead letter once the duration
    is (nearly) over, not at the first failure; Cloud Tasks then holds nothing."""
    queue = "lasting"
    retry = {"max_attempts": -1, "max_retry_duration": "3s", "min_backoff": "0.5s",
             "max_backoff": "0.5s"}  # fmt: skip
    with run_backend(RecordingBackend(responder=lambda r: 500)) as backend:
        settings = relay_settings(
            local_server, [{"name": queue, "target": backend.url, "retry": retry}], port=free_port()
        )
        with run_relay_proxy(settings) as proxy, httpx.Client(timeout=WAIT) as client:
            assert client.post(f"{proxy.url}/long").status_code == 202
            wait_for(lambda: len(_dead_letters(client, proxy.admin_url, queue)) == 1, WAIT)
            [letter] = _dead_letters(client, proxy.admin_url, queue)
            tasks_client, channel = sync_client(local_server.host)
            path = f"projects/{PROJECT}/locations/{LOCATION}/queues/{queue}"
            wait_for(lambda: not list(tasks_client.list_tasks(parent=path)), WAIT)
            channel.close()
    assert letter["attempts"] >= 2
    assert letter["attempts"] == len(backend.received)
    # created_at is the first attempt's dispatch time, as Cloud Tasks recorded it
    assert letter["failed_at"] - letter["created_at"] >= 3 - 1.0 - 0.01


def test_relay_off_leaves_the_ingress_and_the_tasks_as_they_were() -> None:
    """Without relay mode the app has the plain ingress and no relay, and a queue with
    relay = false creates byte for byte the CreateTask a config without relay keys does."""
    from proxy.app import create_app
    from proxy.config.loading import settings_from_dict
    from proxy.engines.cloudtasks.request import create_task_message, queue_targets
    from proxy.envelope import Envelope
    from proxy.ingress.pipeline import Ingress

    plain_ct = {"project": "p", "location": "l"}
    queue = {"name": "q", "target": "https://backend.example/api"}
    plain = settings_from_dict({"engine": "cloudtasks", "queues": [queue], "cloudtasks": plain_ct})
    app = create_app(plain)
    assert type(app.ingress) is Ingress
    assert app.state.relay is None
    mixed = settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [{**queue, "relay": False}, {"name": "r", "target": "https://b.example"}],
            "cloudtasks": {**plain_ct, "relay": True, "relay_url": "https://p.example/relay",
                           "relay_service_account_email": INVOKER},
        }
    )  # fmt: skip
    envelope = Envelope(
        id="t1", queue="q", method="POST", path="/x", query="a=1",
        headers=(("content-type", "text/plain"),), body=b"body",
        received_at=1.0, schedule_time=None, idempotency_key=None, request_id="r1",
    )  # fmt: skip
    before = create_task_message(queue_targets(plain)["q"], envelope).SerializeToString()
    after = create_task_message(queue_targets(mixed)["q"], envelope).SerializeToString()
    assert before == after
