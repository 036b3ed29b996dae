"""Deliveries to a private backend carry a Google-signed ID token: ``ingest-proxy serve``
(a real process) gets it with google-auth from local stand-ins of Google's identity
endpoints (tests/support/google_identity.py; Google's own cannot run here): the metadata
server (``GCE_METADATA_HOST``), a key file's ``token_uri``, or IAM Credentials signing as
another account. The recording backend verifies every request's ``Authorization:
Bearer`` with google-auth, as a private Cloud Run service does, answering 401 when it does
not verify."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import google.auth.transport.requests
import httpx
import pytest
from google.cloud.tasks_v2 import Queue
from google.oauth2 import id_token

from proxy.config.loading import settings_from_dict
from tests.support.backend import Received, RecordingBackend, run_backend
from tests.support.cloudtasks_server import run_server, sync_client
from tests.support.emulator import LOCATION, PROJECT
from tests.support.google_identity import EMAIL, IdentityServer, run_identity_server
from tests.support.servers import free_port, run_proxy, wait_for

ROOT = Path(__file__).resolve().parents[3]


OTHER = "invoker@test-project.iam.gserviceaccount.com"
ADMIN_TOKEN = "admin-token-of-this-test"
# How the proxy gets its token: (its credentials, the account the queue names).
MODES = {"metadata": ("metadata", EMAIL), "key_file": ("key_file", EMAIL)}
MODES["impersonated"] = ("metadata", OTHER)
MODES["oauth"] = ("key_file", EMAIL)  # an access token for a Google API target
# The fixture's modes: those, and one whose queue makes one attempt only.
FIXTURE_MODES = {**MODES, "metadata_once": ("metadata", EMAIL)}


class Verifier:
    """The backend's check of each request; ``verdicts`` holds (task id, valid)."""

    def __init__(self, identity: IdentityServer) -> None:
        self.identity = identity
        self.audience = ""
        self.email = EMAIL
        self.oauth = False  # check access tokens (issued by the identity) instead
        self.mode = ""  # the proxy fixture's MODES key
        self.verdicts: list[tuple[str, bool]] = []
        self._lock = threading.Lock()

    def __call__(self, request: Received) -> int:
        valid = False
        header = request.header("authorization") or ""
        if header.startswith("Bearer ") and self.oauth:
            valid = header.removeprefix("Bearer ") in self.identity.access_tokens
        elif header.startswith("Bearer "):
            try:
                claims = id_token.verify_token(
                    header.removeprefix("Bearer "),
                    google.auth.transport.requests.Request(),
                    audience=self.audience,
                    certs_url=f"{self.identity.url}/certs",
                )
                valid = claims.get("email") == self.email
            except ValueError:
                valid = False
        with self._lock:
            self.verdicts.append((request.header("x-cloudtasks-taskname") or "", valid))
        return 200 if valid else 401


@pytest.fixture
def identity() -> Iterator[IdentityServer]:
    with run_identity_server(IdentityServer(lifetime=3.0)) as server:
        yield server


@pytest.fixture
def verifier(identity: IdentityServer) -> Verifier:
    return Verifier(identity)


@pytest.fixture
def backend(verifier: Verifier) -> Iterator[RecordingBackend]:
    with run_backend(RecordingBackend(responder=verifier)) as backend:
        verifier.audience = backend.url  # the target's origin: the default audience
        yield backend


@pytest.fixture(params=["metadata"])
def proxy(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    identity: IdentityServer,
    backend: RecordingBackend,
    verifier: Verifier,
) -> Iterator[tuple[str, str, Path]]:
    """The proxy with one queue at 5/s whose deliveries carry a token (``request.param``:
    a key of MODES, how it gets it); its ingress and admin URLs and its log file."""
    credentials, account = FIXTURE_MODES[request.param]
    retry = "max_attempts = 1\n" if request.param == "metadata_once" else ""
    verifier.email = account
    verifier.oauth = request.param == "oauth"
    verifier.mode = request.param
    identity.impersonable.add(OTHER)
    auth = 'auth = "oauth"\n' if verifier.oauth else ""
    port, admin = free_port(), free_port()
    config = tmp_path / "proxy.toml"
    config.write_text(
        f'[[queues]]\nname = "private"\ntarget = "{backend.url}"\nrate = 5\n'
        f'service_account_email = "{account}"\n{auth}'
        f'[queues.retry]\nmin_backoff = "100ms"\nmax_backoff = "1s"\n{retry}'
        f'[local]\ndb = "{tmp_path / "tasks.db"}"\niam_credentials_url = "{identity.url}"\n'
        f"[server]\nport = {port}\nadmin_port = {admin}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    env["INGEST_PROXY_ADMIN_TOKEN"] = ADMIN_TOKEN
    env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
    if credentials == "key_file":
        env["GOOGLE_APPLICATION_CREDENTIALS"] = str(identity.key_file(tmp_path))
    else:
        env["GCE_METADATA_HOST"] = env["GCE_METADATA_IP"] = identity.host
    log = tmp_path / "proxy.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
            cwd=ROOT,
            env=env,
            stderr=stderr,
        )
        url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
        try:
            wait_for(lambda: _up(admin_url, process), timeout=30, interval=0.1)
            yield url, admin_url, log
        finally:
            process.terminate()
            process.wait(timeout=30)


def _up(admin_url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the proxy exited during start-up"
    try:
        return httpx.get(admin_url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _send(url: str, count: int) -> list[str]:
    ids = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for i in range(count):
            answer = client.post(f"/orders/{i}", content=b'{"n": 1}')
            assert answer.status_code == 202
            ids.append(answer.json()["task"])
    return ids


def _delivered(verifier: Verifier, ids: list[str]) -> bool:
    done = {task for task, valid in verifier.verdicts if valid}
    return done >= set(ids)


@pytest.mark.parametrize("proxy", list(MODES), indirect=True)
def test_every_delivery_carries_a_token_that_verifies_fetched_once_per_lifetime(
    proxy: tuple[str, str, Path], identity: IdentityServer, verifier: Verifier
) -> None:
    """30 tasks at 5/s (6 s, two 3 s token lifetimes and more): every request the
    backend got verified (signature, aud, exp, the queue's account), none was refused,
    and a handful of tokens was minted, not one per delivery. No token is in the log or
    the metrics."""
    url, admin_url, log = proxy
    ids = _send(url, 30)
    wait_for(lambda: _delivered(verifier, ids), timeout=60, message="not all delivered")
    assert all(valid for _, valid in verifier.verdicts)
    assert len(verifier.verdicts) == 30
    # The tokens came from the mode's endpoint, a handful of times (access tokens live an
    # hour here: one; 3 s ID tokens: one per lifetime).
    source = {"metadata": "metadata", "key_file": "token_uri", "impersonated": "iam"}
    if verifier.oauth:
        assert len(identity.access_tokens) <= 3
    else:
        assert 2 <= identity.fetches[source[verifier.mode]] <= 8
        assert sum(identity.fetches.values()) == identity.fetches[source[verifier.mode]]
    metrics = httpx.get(admin_url + "/metrics", timeout=10).text
    text = log.read_text() + metrics
    secrets = [*identity.minted, *identity.access_tokens]
    assert secrets
    assert not any(token in text for token in secrets)
    assert not any(token.split(".")[-1] in text for token in identity.minted)  # signatures


def test_without_a_metadata_server_attempts_fail_as_auth_and_none_goes_without(
    proxy: tuple[str, str, Path], identity: IdentityServer, verifier: Verifier
) -> None:
    """While the metadata server answers 503, attempts fail with outcome ``auth`` (counted)
    and nothing reaches the backend; once it is back, every task is delivered, each with
    a token that verifies."""
    url, admin_url, _ = proxy
    identity.down = True
    ids = _send(url, 5)

    def auth_failures() -> float:
        metrics = httpx.get(admin_url + "/metrics", timeout=10).text
        lines = [
            line
            for line in metrics.splitlines()
            if line.startswith("ingest_proxy_dispatches_total{") and 'status_class="auth"' in line
        ]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    wait_for(lambda: auth_failures() >= 5, timeout=30, message="no auth failures counted")
    assert verifier.verdicts == []
    identity.down = False
    wait_for(lambda: _delivered(verifier, ids), timeout=60, message="not delivered after")
    assert all(valid for _, valid in verifier.verdicts)


def test_one_config_gives_the_same_authorization_on_both_engines(
    tmp_path: Path, proxy: tuple[str, str, Path], verifier: Verifier, backend: RecordingBackend
) -> None:
    """Parity: the queue with service_account_email, on the embedded engine (token from
    the metadata server) and on the Cloud Tasks engine (cloudtasks-server as Cloud Tasks,
    its own signed token): both deliveries carry ``Authorization: Bearer`` and an RS256
    JWT with the same claims, audience (the target's origin) and account."""
    url, _, _ = proxy
    [embedded_id] = _send(url, 1)
    wait_for(lambda: _delivered(verifier, [embedded_id]), timeout=30, message="not delivered")
    queue = "private-ct"
    with run_server(tmp_path / "ct.db", rest_port=0) as server:
        client, channel = sync_client(server.host)
        try:
            client.create_queue(
                parent=f"projects/{PROJECT}/locations/{LOCATION}",
                queue=Queue(name=f"projects/{PROJECT}/locations/{LOCATION}/queues/{queue}"),
            )
        finally:
            channel.close()
        settings = settings_from_dict(
            {
                "engine": "cloudtasks",
                "queues": [{"name": queue, "target": backend.url, "service_account_email": EMAIL}],
                "cloudtasks": {
                    "project": PROJECT,
                    "location": LOCATION,
                    "emulator_host": server.host,
                },
            }
        )
        with run_proxy(settings) as running:
            [ct_id] = _send(running.url, 1)
            got = wait_for_request(backend, ct_id)
    [embedded] = [r for r in backend.received if r.header("x-cloudtasks-taskname") == embedded_id]
    shapes = []
    for request in (embedded, got):
        header = request.header("authorization") or ""
        assert header.startswith("Bearer ")
        head, claims = _unverified(header.removeprefix("Bearer "))
        shapes.append((head["alg"], sorted(claims), claims["aud"], claims["email"]))
    assert shapes[0] == shapes[1]
    assert shapes[0][2] == backend.url
    assert shapes[0][3] == EMAIL


def wait_for_request(backend: RecordingBackend, task_id: str) -> Received:
    def found() -> Received | None:
        return next(
            (r for r in backend.received if r.header("x-cloudtasks-taskname") == task_id), None
        )

    wait_for(lambda: found() is not None, timeout=30, message="the Cloud Tasks task did not come")
    request = found()
    assert request is not None
    return request


def _unverified(token: str) -> tuple[dict[str, object], dict[str, object]]:
    parts = token.split(".")
    assert len(parts) == 3
    assert parts[2]  # signed

    def decode(part: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        )
        return data

    return decode(parts[0]), decode(parts[1])


@pytest.mark.parametrize("proxy", ["metadata_once"], indirect=True)
def test_no_token_reaches_a_dead_letter_or_the_admin_api_even_when_echoed(
    proxy: tuple[str, str, Path],
    identity: IdentityServer,
    backend: RecordingBackend,
    verifier: Verifier,
) -> None:
    """A backend that refuses with its request headers in the answer (a debug endpoint):
    the task runs out of attempts and becomes a dead letter whose snippet holds
    ``[token]`` where the token was; the admin API's queue, task and dead-letter views,
    the log and the metrics hold no token."""
    url, admin_url, log = proxy

    def echo(request: Received) -> tuple[int, dict[str, str], bytes]:
        verifier(request)
        return 403, {}, f"denied: {request.header('authorization')}".encode()

    backend.responder = echo
    [task] = _send(url, 1)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}

    def dead_letters() -> list[dict[str, object]]:
        answer = httpx.get(f"{admin_url}/queues/private/dead-letters", headers=headers, timeout=10)
        items: list[dict[str, object]] = answer.json()["dead_letters"]
        return items

    wait_for(lambda: dead_letters(), timeout=30, message="no dead letter")
    [dead] = dead_letters()
    assert dead["id"] == task
    assert dead["response_snippet"] == "denied: Bearer [token]"
    views = [
        httpx.get(f"{admin_url}{path}", headers=headers, timeout=10).text
        for path in ("/queues", "/queues/private", "/queues/private/tasks?view=full")
    ]
    text = "".join(views) + json.dumps(dead) + log.read_text()
    text += httpx.get(f"{admin_url}/metrics", timeout=10).text
    assert identity.minted
    assert not any(token in text for token in identity.minted)
