"""The ingress HTTP protocol (proxy/protocol.py): one write per response, and the cases
where a response's head must not wait for a body. Deadlines and head-size limits are
tested through the ingress in tests/test_ingress.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from proxy.app import create_app
from proxy.config import settings_from_dict
from proxy.protocol import _OneWriteResponse
from proxy.server import ingress_options
from tests.support.engines import RecordingEngine
from tests.support.servers import serve_in_thread

SETTINGS = settings_from_dict({"queues": [{"name": "q", "target": "http://127.0.0.1:9"}]})


class _RecordingTransport:
    """Records what is written (a stand-in for the socket's transport in a unit test)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _cycle(transport: _RecordingTransport) -> tuple[Any, _OneWriteResponse]:
    cycle = SimpleNamespace(response_started=False, transport=None)
    adapter = _OneWriteResponse(
        cast(asyncio.Transport, transport), cast(RequestResponseCycle, cycle)
    )
    cycle.transport = adapter
    return cycle, adapter


def test_head_and_first_body_chunk_are_one_write() -> None:
    """The status line and headers wait for the first body chunk and leave with it; later
    chunks go straight to the transport."""
    transport = _RecordingTransport()
    cycle, adapter = _cycle(transport)
    adapter.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response starts: at once
    cycle.response_started = True
    adapter.write(b"HTTP/1.1 202 Accepted\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    adapter.write(b"body")
    assert transport.writes[1:] == [b"HTTP/1.1 202 Accepted\r\n\r\nbody"]
    assert cycle.transport is transport


def test_closing_sends_a_held_head_first() -> None:
    """Closing (an app that fails after starting its response) still writes the head."""
    transport = _RecordingTransport()
    cycle, adapter = _cycle(transport)
    cycle.response_started = True
    adapter.write(b"HTTP/1.1 500 Internal Server Error\r\n\r\n")
    adapter.close()
    assert transport.writes == [b"HTTP/1.1 500 Internal Server Error\r\n\r\n"]
    assert adapter.is_closing()


@pytest.fixture
def ingress() -> Iterator[tuple[int, RecordingEngine]]:
    engine = RecordingEngine()
    options = ingress_options(SETTINGS) | {"log_level": "warning"}
    with serve_in_thread(create_app(SETTINGS, engine=engine), **options) as url:
        yield int(url.rsplit(":", 1)[1]), engine


def _read_responses(sock: socket.socket, count: int) -> bytes:
    data = b""
    while data.count(b"HTTP/1.1 ") < count or not data.endswith((b"}", b"\r\n\r\n")):
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return data


def test_head_request_gets_its_response(ingress: tuple[int, RecordingEngine]) -> None:
    """A HEAD response has no body to wait for: it arrives, and the connection serves the
    next request."""
    port, engine = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        head = _read_responses(sock, 1)
        assert head.startswith(b"HTTP/1.1 202 ")
        assert head.endswith(b"\r\n\r\n")
        sock.sendall(b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        assert _read_responses(sock, 1).startswith(b"HTTP/1.1 202 ")
    assert [(e.method, e.body) for e in engine.envelopes] == [("HEAD", b""), ("POST", b"hi")]


def test_expect_100_continue(ingress: tuple[int, RecordingEngine]) -> None:
    """A client that waits for "100 Continue" gets it before sending its body, then 202."""
    port, engine = ingress
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        assert _read_responses(sock, 1).startswith(b"HTTP/1.1 202 ")
    assert [e.body for e in engine.envelopes] == [b"hello"]


def test_pipelined_requests_are_answered_in_order(ingress: tuple[int, RecordingEngine]) -> None:
    """Requests sent back to back on one connection get complete responses, in order."""
    port, engine = ingress
    requests = b"".join(
        b"POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n%d" % (i, i) for i in range(3)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(requests)
        answers = _read_responses(sock, 3)
    assert answers.count(b"HTTP/1.1 202 ") == 3
    assert [e.path for e in engine.envelopes] == ["/0", "/1", "/2"]
