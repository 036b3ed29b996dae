"""The ingress listener's HTTP/1.1 protocol (proxy/http/ingress_protocol.py), over raw
sockets against a real server, on both event loops the proxy runs on (asyncio's, and uvloop's as
``ingest-proxy serve`` uses). Header and body deadlines and the head-size cap are tested
through the ingress in tests/ingress/test_pipeline.py and tests/security/."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import BacklogFullError
from proxy.http.ingress_protocol import MAX_PIPELINED, ingress_protocol
from proxy.server import ingress_options
from tests.support.engines import RecordingEngine
from tests.support.servers import serve_in_thread

SETTINGS = settings_from_dict(
    {"queues": [{"name": "q", "target": "http://127.0.0.1:9"}], "limits": {"max_body_bytes": 1000}}
)
TIMEOUT = 10.0


@dataclass
class GatedEngine(RecordingEngine):
    """Offers the direct path's ``enqueue_nowait``; answers only when the test opens the
    gate, or raises ``bug`` (an unexpected exception, not an engine error)."""

    gate: asyncio.Event | None = None
    held: int = 0
    bug: Exception | None = None
    loop: asyncio.AbstractEventLoop | None = field(default=None, repr=False)

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        self.loop = asyncio.get_running_loop()
        return asyncio.ensure_future(self._enqueue(envelope))

    async def _enqueue(self, envelope: Envelope) -> EnqueueResult:
        if self.bug is not None:
            raise self.bug
        if self.gate is not None:
            self.held += 1
            await self.gate.wait()
        return await self.enqueue(envelope)

    def open_gate(self) -> None:
        assert self.loop is not None
        assert self.gate is not None
        self.loop.call_soon_threadsafe(self.gate.set)


@pytest.fixture(params=["asyncio", "uvloop"])
def proxy(request: pytest.FixtureRequest) -> Iterator[tuple[int, GatedEngine]]:
    engine = GatedEngine()
    options = ingress_options(SETTINGS) | {"log_level": "warning", "timeout_keep_alive": 2}
    app = create_app(SETTINGS, engine=engine)
    with serve_in_thread(app, uvloop=request.param == "uvloop", **options) as url:
        yield int(url.rsplit(":", 1)[1]), engine


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)


def _post(path: str, body: bytes = b"hi", extra: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra
        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def _read(sock: socket.socket, count: int = 1, *, head: bool = False) -> list[Response]:
    """``count`` responses from ``sock`` (``head``: responses to HEAD, without bodies)."""
    data = b""
    responses: list[Response] = []
    while len(responses) < count:
        end = data.find(b"\r\n\r\n")
        if end >= 0:
            lines = data[:end].decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
            length = 0 if head else int(headers.get("content-length", "0"))
            if len(data) >= end + 4 + length:
                body = data[end + 4 : end + 4 + length]
                responses.append(Response(int(lines[0].split()[1]), headers, body))
                data = data[end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, f"connection closed after {len(responses)} responses and {data!r}"
        data += chunk
    assert data == b"", f"unexpected bytes after the responses: {data!r}"
    return responses


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed the connection (waits up to TIMEOUT for the end)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_keep_alive_serves_requests_one_after_another(proxy: tuple[int, GatedEngine]) -> None:
    """One connection, several requests: each answer is a complete 202 with uvicorn's Date
    header, the task id, and the connection stays open."""
    port, engine = proxy
    with _connect(port) as sock:
        for n in range(3):
            sock.sendall(_post(f"/k{n}", b"body-%d" % n))
            (answer,) = _read(sock)
            assert answer.status == 202
            assert "date" in answer.headers
            assert "connection" not in answer.headers
            task = json.loads(answer.body)["task"]
            assert answer.headers["x-task-id"] == task
    assert [(e.path, e.body) for e in engine.envelopes] == [
        ("/k0", b"body-0"),
        ("/k1", b"body-1"),
        ("/k2", b"body-2"),
    ]


def test_pipelined_requests_are_answered_in_order(proxy: tuple[int, GatedEngine]) -> None:
    """More requests in one write than are read ahead (reading pauses, then resumes): all
    are answered, in the order sent, and enqueued in that order."""
    port, engine = proxy
    count = MAX_PIPELINED * 2 + 3
    with _connect(port) as sock:
        sock.sendall(b"".join(_post(f"/p{n}", b"n%d" % n) for n in range(count)))
        answers = _read(sock, count)
    assert [a.status for a in answers] == [202] * count
    assert [a.headers["x-task-id"] for a in answers] == [e.id for e in engine.envelopes]
    assert [e.path for e in engine.envelopes] == [f"/p{n}" for n in range(count)]


def test_http10_and_connection_close_end_the_connection(proxy: tuple[int, GatedEngine]) -> None:
    """HTTP/1.0, and HTTP/1.1 with ``Connection: close``: the answer says
    ``connection: close`` and the server closes the connection after it."""
    port, engine = proxy
    for request in (
        b"POST /old HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi",
        _post("/close", extra=b"Connection: close\r\n"),
    ):
        with _connect(port) as sock:
            sock.sendall(request)
            (answer,) = _read(sock)
            assert answer.status == 202
            assert answer.headers["connection"] == "close"
            assert _closed(sock)
    assert [e.path for e in engine.envelopes] == ["/old", "/close"]


def test_head_request_gets_its_response_without_body(proxy: tuple[int, GatedEngine]) -> None:
    """A HEAD answer has the 202's headers and no body, and the connection serves the next
    request."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n")
        (head,) = _read(sock, head=True)
        assert head.status == 202
        assert int(head.headers["content-length"]) > 0
        sock.sendall(_post("/p"))
        (answer,) = _read(sock)
        assert answer.status == 202
    assert [(e.method, e.body) for e in engine.envelopes] == [("HEAD", b""), ("POST", b"hi")]


def test_expect_100_continue(proxy: tuple[int, GatedEngine]) -> None:
    """A client that waits for "100 Continue" gets it before sending its body, then 202."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(
            b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        assert _read(sock)[0].status == 202
    assert [e.body for e in engine.envelopes] == [b"hello"]


def test_head_refused_without_body_keeps_the_connection(proxy: tuple[int, GatedEngine]) -> None:
    """A refusal of a head that has no body (two Host headers) is a JSON 400, and the
    next request on the connection is served."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n" + _post("/b"))
        refused, accepted = _read(sock, 2)
    assert refused.status == 400
    assert json.loads(refused.body)["error"] == "invalid_host"
    assert "connection" not in refused.headers
    assert accepted.status == 202
    assert [e.path for e in engine.envelopes] == ["/b"]


def test_head_refused_before_its_body_closes_unread(proxy: tuple[int, GatedEngine]) -> None:
    """A head refused while a body follows: answered at once with ``connection: close``,
    without waiting for the body, and nothing after it on the connection is read."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"TRACE /t HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npart")
        (answer,) = _read(sock)
        assert answer.status == 405
        assert answer.headers["connection"] == "close"
        assert json.loads(answer.body)["error"] == "method_not_allowed"
        assert _closed(sock)
    assert engine.envelopes == []


def test_expect_continue_is_not_sent_for_a_refused_head(proxy: tuple[int, GatedEngine]) -> None:
    """A client waiting for "100 Continue" gets the refusal instead, and no 100."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(
            b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        (answer,) = _read(sock)
        assert answer.status == 413
        assert _closed(sock)
    assert engine.envelopes == []


def test_chunked_body_is_read_whole(proxy: tuple[int, GatedEngine]) -> None:
    """A chunked body arrives in pieces and is enqueued whole."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello")
        time.sleep(0.05)
        sock.sendall(b"\r\n6\r\n world\r\n0\r\n\r\n")
        (answer,) = _read(sock)
    assert answer.status == 202
    assert [e.body for e in engine.envelopes] == [b"hello world"]


def test_chunked_body_over_the_limit_is_refused_unread(proxy: tuple[int, GatedEngine]) -> None:
    """A chunked body that grows past limits.max_body_bytes gets 413 as soon as it does,
    the connection is closed, and nothing is enqueued."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (1200, b"x" * 1200))
        (answer,) = _read(sock)
        assert answer.status == 413
        assert json.loads(answer.body)["error"] == "body_too_large"
        assert answer.headers["connection"] == "close"
        assert _closed(sock)
    assert engine.envelopes == []


def test_unparsable_request_gets_json_400_and_close(proxy: tuple[int, GatedEngine]) -> None:
    """Bytes that are not HTTP/1.1: a JSON 400 and the connection closes."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        (answer,) = _read(sock)
        assert answer.status == 400
        assert json.loads(answer.body)["error"] == "bad_request"
        assert _closed(sock)
    assert engine.envelopes == []


def test_upgrade_request_is_answered_then_closed(proxy: tuple[int, GatedEngine]) -> None:
    """An Upgrade request (no WebSockets here) is an ordinary request; the bytes after its
    head are not read as HTTP, so the connection closes after the answer."""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            b"\x81\x05hello"
        )
        (answer,) = _read(sock)
        assert answer.status == 202
        assert _closed(sock)
    assert [(e.path, e.body) for e in engine.envelopes] == [("/ws", b"")]
    assert all(name not in ("upgrade", "connection") for name, _ in engine.envelopes[0].headers)


def test_idle_keep_alive_connection_is_closed(proxy: tuple[int, GatedEngine]) -> None:
    """A kept-alive connection idle for longer than timeout_keep_alive (2 s here) is
    closed by the server."""
    port, _ = proxy
    with _connect(port) as sock:
        sock.sendall(_post("/idle"))
        assert _read(sock)[0].status == 202
        started = time.monotonic()
        assert _closed(sock)
        assert time.monotonic() - started >= 1.5


def test_engine_refusal_keeps_the_connection(proxy: tuple[int, GatedEngine]) -> None:
    """An engine refusal after the body was read (429 with Retry-After) leaves the
    connection open for the next request."""
    port, engine = proxy
    with _connect(port) as sock:
        engine.fail_with = BacklogFullError("full", retry_after=7)
        sock.sendall(_post("/full"))
        (refused,) = _read(sock)
        engine.fail_with = None
        sock.sendall(_post("/next"))
        (accepted,) = _read(sock)
    assert (refused.status, refused.headers["retry-after"]) == (429, "7")
    assert json.loads(refused.body)["error"] == "backlog_full"
    assert accepted.status == 202


def test_engine_bug_is_a_json_500(proxy: tuple[int, GatedEngine]) -> None:
    """An unexpected exception in the engine is a JSON 500, not a hung connection."""
    port, engine = proxy
    engine.bug = RuntimeError("boom")
    with _connect(port) as sock:
        sock.sendall(_post("/bug"))
        (answer,) = _read(sock)
    assert answer.status == 500
    assert json.loads(answer.body)["error"] == "internal_error"


def test_client_leaving_mid_enqueue_keeps_the_task(proxy: tuple[int, GatedEngine]) -> None:
    """A client that disconnects while its task is being stored: the task is still
    enqueued, and the server goes on serving others."""
    port, engine = proxy
    engine.gate = asyncio.Event()
    with _connect(port) as sock:
        sock.sendall(_post("/left"))
        deadline = time.monotonic() + TIMEOUT
        while engine.held == 0:
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.01)
    engine.open_gate()
    engine.gate = None
    with _connect(port) as sock:
        sock.sendall(_post("/after"))
        assert _read(sock)[0].status == 202
    assert [e.path for e in engine.envelopes] == ["/left", "/after"]


def test_protocol_refuses_an_app_that_is_not_the_proxy() -> None:
    """The protocol calls the ingress directly, so it serves only the proxy's app."""

    async def other(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover
        pass

    protocol = ingress_protocol(10, 65536, 30)
    config = uvicorn.Config(other)
    with pytest.raises(TypeError, match="serves only the app"):
        protocol(config, uvicorn.server.ServerState(), {})  # type: ignore[call-arg]


def test_a_bug_in_a_parser_callback_is_a_logged_json_500(
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An unexpected exception raised while the parser calls the protocol (here from the
    ingress's check of a head, counting a refusal) is a JSON 500 and a logged traceback,
    not a silent 400. The bug is planted in the metrics (plain Python): the ingress itself
    may be compiled (setup.py), and a compiled class's methods cannot be replaced."""
    engine = GatedEngine()
    app = create_app(SETTINGS, engine=engine)

    def broken(*labels: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.ingress.metrics.requests, "labels", broken)
    options = ingress_options(SETTINGS) | {"log_level": "warning"}
    with (
        serve_in_thread(app, **options) as url,
        caplog.at_level(logging.ERROR, logger="ingest_proxy.http"),
        _connect(int(url.rsplit(":", 1)[1])) as sock,
    ):
        sock.sendall(b"TRACE /bug HTTP/1.1\r\nHost: x\r\n\r\n")  # refused: 405, counted
        (answer,) = _read(sock)
        assert _closed(sock)
    assert answer.status == 500
    assert json.loads(answer.body)["error"] == "internal_error"
    assert answer.headers["connection"] == "close"
    [record] = [r for r in caplog.records if r.name == "ingest_proxy.http"]
    assert record.exc_info is not None
    assert "a bug" in str(record.exc_info[1])
    assert engine.envelopes == []


def test_answers_owed_are_sent_before_a_parser_error_closes(
    proxy: tuple[int, GatedEngine],
) -> None:
    """Requests read before bytes the parser rejects are answered 202, in order, while
    their tasks are still being stored; then the 400, and the connection closes."""
    port, engine = proxy
    engine.gate = asyncio.Event()
    with _connect(port) as sock:
        sock.sendall(_post("/a") + _post("/b") + b"\x00garbage\r\n\r\n")
        deadline = time.monotonic() + TIMEOUT
        while engine.held == 0:
            assert time.monotonic() < deadline, "the request never reached the engine"
            time.sleep(0.01)
        engine.open_gate()
        first, second, refused = _read(sock, 3)
        assert _closed(sock)
    assert [first.status, second.status, refused.status] == [202, 202, 400]
    assert refused.headers["connection"] == "close"
    assert [e.path for e in engine.envelopes] == ["/a", "/b"]


def test_half_closed_client_gets_its_answer(proxy: tuple[int, GatedEngine]) -> None:
    """A client that closes its side after sending its request still gets the 202, then
    the server closes the connection. (Whether the answer says ``connection: close``
    depends on whether the server read the EOF before it answered, a race between the
    kernel and the loop; the unit tests below pin both orders.)"""
    port, engine = proxy
    with _connect(port) as sock:
        sock.sendall(_post("/half"))
        sock.shutdown(socket.SHUT_WR)
        (answer,) = _read(sock)
        assert _closed(sock)
    assert answer.status == 202
    assert [e.path for e in engine.envelopes] == ["/half"]


@dataclass
class _Transport:
    """A transport that records what the protocol does with it."""

    written: list[bytes] = field(default_factory=list)
    paused: bool = False
    closed: bool = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_read_ahead_is_bounded_within_one_read() -> None:
    """3,000 GETs in one read while the first is being stored: at most MAX_PIPELINED are
    parsed and waiting, reading is paused and the rest is left unparsed; as answers go
    out the rest is parsed in turn, never more than MAX_PIPELINED waiting, and all 3,000
    are answered in order."""

    async def main() -> None:
        engine = GatedEngine(gate=asyncio.Event())
        protocol, transport = _unit_protocol(engine)
        count = 3000
        protocol.data_received(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * count)
        assert len(protocol.line) <= MAX_PIPELINED
        assert transport.paused
        assert len(protocol.unread) > 0
        most = 0
        engine.gate.set()
        deadline = time.monotonic() + TIMEOUT
        while b"".join(transport.written).count(b"HTTP/1.1 202 ") < count:
            assert time.monotonic() < deadline, "not every request was answered"
            most = max(most, len(protocol.line))
            await asyncio.sleep(0)
        assert most <= MAX_PIPELINED
        assert [e.path for e in engine.envelopes] == ["/p"] * count
        assert not transport.paused  # all read: reading again
        protocol.connection_lost(None)

    asyncio.run(main())


def test_nothing_is_stored_while_the_client_does_not_read() -> None:
    """While the transport's buffer is full (writing paused: the client reads nothing),
    requests read wait in line and none is handed to the engine; once the client reads
    again they are stored and answered, in order."""

    async def main() -> None:
        engine = GatedEngine()
        protocol, transport = _unit_protocol(engine)
        protocol.pause_writing()
        protocol.data_received(b"".join(_post(f"/w{n}") for n in range(3)))
        for _ in range(10):
            await asyncio.sleep(0)
        assert engine.envelopes == []
        assert len(protocol.line) == 3
        protocol.resume_writing()
        deadline = time.monotonic() + TIMEOUT
        while b"".join(transport.written).count(b"HTTP/1.1 202 ") < 3:
            assert time.monotonic() < deadline, "the requests were not answered"
            await asyncio.sleep(0)
        assert [e.path for e in engine.envelopes] == ["/w0", "/w1", "/w2"]
        protocol.connection_lost(None)

    asyncio.run(main())


def test_eof_read_before_the_answer_makes_it_say_close() -> None:
    """EOF read while the request is still being stored: the transport is kept open
    for the answer owed, which says ``connection: close``; then the connection closes."""

    async def main() -> None:
        engine = GatedEngine(gate=asyncio.Event())
        protocol, transport = _unit_protocol(engine)
        protocol.data_received(_post("/half"))
        deadline = time.monotonic() + TIMEOUT
        while engine.held == 0:
            assert time.monotonic() < deadline, "the request never reached the engine"
            await asyncio.sleep(0)
        assert protocol.eof_received() is True
        assert not transport.closed
        engine.open_gate()
        while not transport.closed:
            assert time.monotonic() < deadline, "the connection was not closed"
            await asyncio.sleep(0)
        written = b"".join(transport.written)
        assert written.startswith(b"HTTP/1.1 202 ")
        assert b"\r\nconnection: close\r\n" in written
        assert [e.path for e in engine.envelopes] == ["/half"]
        protocol.connection_lost(None)

    asyncio.run(main())


def test_eof_read_after_the_answer_closes_the_connection() -> None:
    """EOF read after the answer went out (kept alive): nothing more is owed, so the
    connection closes."""

    async def main() -> None:
        engine = GatedEngine()
        protocol, transport = _unit_protocol(engine)
        protocol.data_received(_post("/half"))
        deadline = time.monotonic() + TIMEOUT
        while not transport.written:
            assert time.monotonic() < deadline, "the request was not answered"
            await asyncio.sleep(0)
        assert b"connection: close" not in b"".join(transport.written)
        assert not transport.closed
        protocol.eof_received()
        while not transport.closed:
            assert time.monotonic() < deadline, "the connection was not closed"
            await asyncio.sleep(0)
        protocol.connection_lost(None)

    asyncio.run(main())


def _unit_protocol(engine: GatedEngine) -> tuple[Any, _Transport]:
    """The ingress protocol on a recording transport, in front of ``engine``."""
    app = create_app(SETTINGS, engine=engine)
    protocol_class = ingress_protocol(10, 65536, 30)
    protocol: Any = protocol_class(uvicorn.Config(app), ServerState(), {})  # type: ignore[call-arg]
    transport = _Transport()
    protocol.connection_made(transport)
    return protocol, transport


# ---------------------------------------------------------------- any split of a byte stream


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def shared_proxy(request: pytest.FixtureRequest) -> Iterator[tuple[int, GatedEngine]]:
    engine = GatedEngine()
    options = ingress_options(SETTINGS) | {"log_level": "warning"}
    app = create_app(SETTINGS, engine=engine)
    with serve_in_thread(app, uvloop=request.param == "uvloop", **options) as url:
        yield int(url.rsplit(":", 1)[1]), engine


_bodies = st.binary(max_size=300)
_requests = st.lists(
    st.tuples(st.sampled_from(["POST", "PUT", "GET"]), _bodies, st.booleans(), st.integers(1, 64)),
    min_size=1,
    max_size=6,
)


def _serialize(index: int, method: str, body: bytes, chunked: bool, chunk: int) -> bytes:
    head = f"{method} /r{index} HTTP/1.1\r\nHost: x\r\n".encode()
    if method == "GET":
        return head + b"\r\n"
    if not chunked:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces)
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + encoded + b"0\r\n\r\n"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(requests=_requests, cuts=st.lists(st.floats(0, 1), max_size=6))
def test_pipelined_requests_split_anywhere_arrive_whole_and_in_order(
    shared_proxy: tuple[int, GatedEngine],
    requests: list[tuple[str, bytes, bool, int]],
    cuts: list[float],
) -> None:
    """Requests pipelined on one connection, with and without chunked bodies, their bytes
    cut into reads at arbitrary points: every one is answered 202, in order, and enqueued
    with its exact body."""
    port, engine = shared_proxy
    before = len(engine.envelopes)
    stream = b"".join(_serialize(i, *request) for i, request in enumerate(requests))
    points = sorted({round(cut * len(stream)) for cut in cuts} - {0, len(stream)})
    pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
    with _connect(port) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.002)  # let the server read each piece on its own
        answers = _read(sock, len(requests))
    assert [a.status for a in answers] == [202] * len(requests)
    stored = engine.envelopes[before:]
    assert [(e.path, e.body) for e in stored] == [
        (f"/r{i}", body if method != "GET" else b"")
        for i, (method, body, _, _) in enumerate(requests)
    ]
    assert [a.headers["x-task-id"] for a in answers] == [e.id for e in stored]
