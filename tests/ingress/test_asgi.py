"""The ingress as a plain ASGI app (``AsgiIngress``, proxy/ingress/asgi.py), served by
uvicorn's own HTTP protocol as any ASGI server would serve it. ``ingest-proxy serve``
uses proxy/http/ingress_protocol.py instead (tests/http/test_ingress_protocol.py); both
are built from the same pipeline steps, and these tests check that the ASGI one answers
the same way."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import EngineUnavailableError
from proxy.server import ingress_options
from tests.support.engines import RecordingEngine
from tests.support.servers import serve_in_thread

SETTINGS = settings_from_dict(
    {"queues": [{"name": "q", "target": "http://127.0.0.1:9"}], "limits": {"max_body_bytes": 1000}}
)
TIMEOUT = 10.0


@dataclass
class BuggyEngine(RecordingEngine):
    """Raises an unexpected exception (not an engine error) when ``bug`` is set."""

    bug: Exception | None = None

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        if self.bug is not None:
            raise self.bug
        return await super().enqueue(envelope)

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        return asyncio.ensure_future(self.enqueue(envelope))


@pytest.fixture
def asgi_proxy() -> Iterator[tuple[str, BuggyEngine]]:
    engine = BuggyEngine()
    options = ingress_options(SETTINGS) | {"log_level": "warning", "http": "httptools"}
    with serve_in_thread(create_app(SETTINGS, engine=engine), **options) as url:
        yield url, engine


def test_request_becomes_a_task(asgi_proxy: tuple[str, BuggyEngine]) -> None:
    """A POST is enqueued with its path, query and body, and answered 202 with its id."""
    url, engine = asgi_proxy
    answer = httpx.post(f"{url}/orders/7?x=1", content=b'{"a": 1}', timeout=TIMEOUT)
    assert answer.status_code == 202
    (envelope,) = engine.envelopes
    assert (envelope.path, envelope.query, envelope.body) == ("/orders/7", "x=1", b'{"a": 1}')
    assert answer.json() == {"task": envelope.id, "queue": "q"}
    assert answer.headers["x-task-id"] == envelope.id


def test_head_refused_before_body_closes(asgi_proxy: tuple[str, BuggyEngine]) -> None:
    """A declared body over the limit: 413 JSON and ``connection: close``, body unread."""
    url, engine = asgi_proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nxx")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "body_too_large"
    assert engine.envelopes == []


def test_chunked_body_over_the_limit(asgi_proxy: tuple[str, BuggyEngine]) -> None:
    """A body without Content-Length that grows past the limit: 413, nothing enqueued."""
    url, engine = asgi_proxy
    answer = httpx.post(f"{url}/c", content=iter([b"x" * 600, b"y" * 600]), timeout=TIMEOUT)
    assert answer.status_code == 413
    assert answer.json()["error"] == "body_too_large"
    assert engine.envelopes == []


def test_engine_refusal_is_json(asgi_proxy: tuple[str, BuggyEngine]) -> None:
    """An engine that cannot store: 503 JSON with Retry-After."""
    url, engine = asgi_proxy
    engine.fail_with = EngineUnavailableError("disk full", retry_after=2)
    answer = httpx.post(f"{url}/x", content=b"hi", timeout=TIMEOUT)
    assert (answer.status_code, answer.headers["retry-after"]) == (503, "2")
    assert answer.json() == {"error": "engine_unavailable", "detail": "disk full"}


def test_engine_bug_is_a_json_500(asgi_proxy: tuple[str, BuggyEngine]) -> None:
    """An unexpected exception: a JSON 500 from the ingress, not uvicorn's plain text."""
    url, engine = asgi_proxy
    engine.bug = RuntimeError("boom")
    answer = httpx.post(f"{url}/x", content=b"hi", timeout=TIMEOUT)
    assert answer.status_code == 500
    assert answer.json()["error"] == "internal_error"
