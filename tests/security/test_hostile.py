"""Hostile input over raw sockets against the whole proxy: real uvicorn, the embedded
engine on a real SQLite file, a real RecordingBackend as the configured target.

A second backend, the *decoy*, stands for every address an attacker would like the proxy
to reach (a metadata server, an internal host): its address is written into request
targets and Host headers, and it must never receive anything. Every request gets the
right 4xx (or a 202 that delivers what was asked to the configured target) or a closed
connection, never a 5xx; the proxy keeps serving; the backend sees only well-formed
requests for its own host under the configured base path.

tests/ingress/test_pipeline.py covers some of these in process against an in-memory engine;
here they go through the parser, the engine and the dispatcher to a real backend.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from proxy.config.loading import settings_from_dict
from proxy.ingress.headers import HOP_BY_HOP
from proxy.ingress.pipeline import ALLOWED_METHODS
from tests.support.backend import Received, RecordingBackend, run_backend
from tests.support.servers import RunningProxy, run_proxy, wait_for

MAX_BODY = 1024
MAX_HEADERS = 4096
DEADLINE = 1.0  # header_timeout and body_timeout, seconds
TIMEOUT = 20.0  # any one wait: generous, the machine may be busy


@dataclass
class Rig:
    proxy: RunningProxy
    backend: RecordingBackend
    decoy: RecordingBackend

    @property
    def port(self) -> int:
        return int(self.proxy.url.rsplit(":", 1)[1])

    @property
    def decoy_netloc(self) -> str:
        return self.decoy.url.removeprefix("http://")

    @property
    def backend_netloc(self) -> str:
        return self.backend.url.removeprefix("http://")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One proxy for the module: limits small enough to reach, deadlines of 1 s, and
    X-Forwarded-* believed only from 10.9.9.9 (so not from these tests' 127.0.0.1)."""
    db: Path = tmp_path_factory.mktemp("hostile") / "tasks.db"
    with run_backend() as backend, run_backend() as decoy:
        settings = settings_from_dict(
            {
                "queues": [{"name": "q", "target": backend.url + "/base", "rate": 500}],
                "local": {"db": str(db)},
                "limits": {
                    "max_body_bytes": MAX_BODY,
                    "max_header_bytes": MAX_HEADERS,
                    "body_timeout": DEADLINE,
                },
                "server": {"header_timeout": DEADLINE, "trusted_proxies": "10.9.9.9"},
            }
        )
        with run_proxy(settings) as proxy:
            yield Rig(proxy, backend, decoy)


# ---------------------------------------------------------------- raw HTTP helpers


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    head: bytes
    body: bytes


def read_answer(sock: socket.socket, timeout: float = TIMEOUT) -> Answer:
    """One response (head, and a body of Content-Length), or what came before EOF."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
        while match and len(body) < int(match.group(1)):
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    except ConnectionResetError:
        head, body = data, b""
    status = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
    return Answer(int(status.group(1)) if status else None, head, body)


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Whether the peer closes the connection within ``seconds`` (reading what is left)."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return False


def stream_until_refused(sock: socket.socket, chunk: bytes, count: int) -> int:
    """Send ``chunk`` up to ``count`` times until the peer closes; the bytes sent.

    Fails when all were sent, and with TimeoutError when the peer stops reading but keeps
    the connection open (sendall then blocks).
    """
    sent = 0
    try:
        for _ in range(count):
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        return sent
    raise AssertionError(f"the proxy read all {sent} bytes")


def send_raw(rig: Rig, data: bytes) -> Answer:
    """Send ``data`` on a fresh connection; the first answer."""
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        # Refused before we finished: the answer (if any) is still readable.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        return read_answer(sock)


def delivered(rig: Rig, marker: str) -> Received:
    """The one request with ``marker`` in its query that the backend received."""
    wait_for(
        lambda: any(marker in r.query for r in rig.backend.received),
        TIMEOUT,
        message=f"nothing with {marker} reached the backend",
    )
    [request] = [r for r in rig.backend.received if marker in r.query]
    return request


def assert_healthy(rig: Rig) -> None:
    """The proxy still serves; nothing reached the decoy; the backend saw only well-formed
    requests for its own host under /base."""
    answer = httpx.post(rig.proxy.url + "/health-check?c=ok", content=b"ok", timeout=TIMEOUT)
    assert answer.status_code == 202, answer.text
    assert rig.decoy.received == []
    for request in rig.backend.received:
        assert request.header("host") == rig.backend_netloc, request
        assert request.path == "/base" or request.path.startswith("/base/"), request
        assert request.method in ALLOWED_METHODS
        for name, value in request.headers:
            assert name not in HOP_BY_HOP, request
            assert re.fullmatch(r"[\t\x20-\x7e]*", value), (name, value)


# ---------------------------------------------------------------- the table

D = "{decoy}"  # replaced by the decoy's host:port
REFUSED: list[tuple[str, bytes, set[int]]] = [
    # request target forms and methods
    ("authority-form", b"CONNECT {decoy} HTTP/1.1\r\nHost: {decoy}\r\n\r\n", {400, 405}),
    ("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", {400, 404}),
    ("no-leading-slash", b"GET steal HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("userinfo-target", b"GET @{decoy}/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("unknown-method", b"FROB / HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405}),
    ("trace", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", {405}),
    ("lower-case-method", b"get / HTTP/1.1\r\nHost: x\r\n\r\n", {400, 405}),
    ("http-2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {400}),
    ("tls-client-hello", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(64), {400}),
    ("http-9.9", b"GET / HTTP/9.9\r\nHost: x\r\n\r\n", {400, 505}),
    # Host header tricks
    ("two-hosts", b"GET /h HTTP/1.1\r\nHost: x\r\nHost: {decoy}\r\n\r\n", {400}),
    ("no-host", b"GET /h HTTP/1.1\r\n\r\n", {400}),
    ("host-userinfo", b"GET /h HTTP/1.1\r\nHost: user@{decoy}\r\n\r\n", {400}),
    ("host-with-path", b"GET /h HTTP/1.1\r\nHost: {decoy}/x\r\n\r\n", {400}),
    ("host-crlf", b"GET /h HTTP/1.1\r\nHost: x\r\n {decoy}\r\n\r\n", {400}),
    # path traversal, raw and encoded
    ("dot-dot", b"GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("dot-dot-deep", b"GET /a/b/../../../x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("dot", b"GET /a/./b HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("encoded-dot-dot", b"GET /a/%2e%2E/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("encoded-slash", b"GET /a/..%2f..%2fx HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("backslash", b"GET /a/..\\..\\x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("encoded-backslash", b"GET /a/..%5c..%5Cx HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("dot-dot-semicolon", b"GET /a/..;/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("dot-dot-encoded-semicolon", b"GET /a/..%3bjsessionid=1/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    # Content-Length and Transfer-Encoding
    ("cl-not-a-number", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", {400}),
    ("cl-negative", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", {400}),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", {400}),
    (
        "cl-twice",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
        {400},
    ),
    (
        "cl-overflow",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        {400, 413},
    ),
    (
        "cl-and-te",
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        {400},
    ),
    ("te-identity", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\nabc", {400}),
    (
        "bad-chunk-size",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        {400},
    ),
    ("cl-too-large", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n", {413}),
    # bytes that must never reach a header
    ("nul-in-value", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", {400}),
    ("cr-in-value", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", {400}),
    ("lf-injection", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A: a\nX-Injected: 1\r\n\r\n", {400}),
    ("obs-fold", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", {400}),
    ("control-in-value", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A: a\x01\x7fb\r\n\r\n", {400}),
    ("space-before-colon", b"GET /n HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", {400}),
    ("nul-in-path", b"GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    # invalid UTF-8 / non-ASCII
    ("non-ascii-path", b"GET /\xff\xfe/x HTTP/1.1\r\nHost: x\r\n\r\n", {400}),
    ("non-ascii-value", b"GET /u HTTP/1.1\r\nHost: x\r\nX-A: \xc3\x28\xff\r\n\r\n", {400}),
    ("non-ascii-name", b"GET /u HTTP/1.1\r\nHost: x\r\nX-\xff: v\r\n\r\n", {400}),
    ("non-ascii-host", b"GET /u HTTP/1.1\r\nHost: \xe2\x98\x83.example\r\n\r\n", {400}),
    # an upgrade whose body the parser would hand to another protocol
    (
        "upgrade-with-body",
        b"POST /u HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Content-Length: 3\r\n\r\nabc",
        {400},
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [pytest.param(data, expected, id=name) for name, data, expected in REFUSED],
)
def test_hostile_request_is_refused_with_a_4xx(
    rig: Rig, request_bytes: bytes, expected: set[int]
) -> None:
    """Each hostile request gets the expected 4xx (never a 5xx), nothing is delivered for
    it, and the proxy keeps serving."""
    before = len(rig.backend.received)
    answer = send_raw(rig, request_bytes.replace(D.encode(), rig.decoy_netloc.encode()))
    assert answer.status in expected, answer.head
    time.sleep(0.05)  # a wrongly accepted request would be delivered at once (rate 500)
    assert_healthy(rig)
    assert [r for r in rig.backend.received[before:] if "c=ok" not in r.query] == []


# ---------------------------------------------------------------- accepted, but only to the target


ACCEPTED: list[tuple[str, bytes, tuple[str, str, bytes]]] = [
    (
        "absolute-form-metadata",
        b"GET http://169.254.169.254/latest/meta-data/?c=abs1 HTTP/1.1\r\n"
        b"Host: 169.254.169.254\r\n\r\n",
        ("GET", "/base/latest/meta-data/", b""),
    ),
    (
        "absolute-form-decoy",
        b"POST http://{decoy}/steal?c=abs2 HTTP/1.1\r\nHost: {decoy}\r\n"
        b"Content-Length: 4\r\n\r\nloot",
        ("POST", "/base/steal", b"loot"),
    ),
    (
        "host-is-the-decoy",
        b"PUT /h?c=host1 HTTP/1.1\r\nHost: {decoy}\r\nContent-Length: 2\r\n\r\nhi",
        ("PUT", "/base/h", b"hi"),
    ),
    (
        "host-is-metadata",
        b"GET /h?c=host2 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
        ("GET", "/base/h", b""),
    ),
    (
        "double-slash",
        b"GET //{decoy}/x?c=slash2 HTTP/1.1\r\nHost: x\r\n\r\n",
        ("GET", "/base//{decoy}/x", b""),
    ),
    (
        "double-encoded-dots",  # one decoding (RFC 3986) gives %2e%2e, not a dot segment
        b"GET /a/%252e%252e/x?c=enc2 HTTP/1.1\r\nHost: x\r\n\r\n",
        ("GET", "/base/a/%252e%252e/x", b""),
    ),
    (
        "unsafe-characters-are-escaped",
        b'GET /a\\b|c{d}?c=esc&q=<"x"> HTTP/1.1\r\nHost: x\r\n\r\n',
        ("GET", "/base/a%5Cb%7Cc%7Bd%7D", b""),
    ),
    (
        "invalid-utf8-body",  # bodies are bytes: delivered exactly
        b"POST /b?c=utf8 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\xc3\x28\xff\x00",
        ("POST", "/base/b", b"\xc3\x28\xff\x00"),
    ),
    (
        "body-at-the-limit-chunked",
        b"POST /b?c=chunk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"200\r\n"
        + b"a" * 512
        + b"\r\n"
        + b"200\r\n"
        + b"b" * 512
        + b"\r\n0\r\n\r\n",
        ("POST", "/base/b", b"a" * 512 + b"b" * 512),
    ),
    (
        "request-smuggled-in-a-body",  # re-framed by the proxy: one opaque body, one request
        b"POST /s?c=smuggle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"30\r\n0\r\n\r\nGET /smuggled?c=inner HTTP/1.1\r\nHost: x\r\n\r\n\r\n0\r\n\r\n",
        ("POST", "/base/s", b"0\r\n\r\nGET /smuggled?c=inner HTTP/1.1\r\nHost: x\r\n\r\n"),
    ),
    (
        "websocket-upgrade-is-a-plain-get",
        b"GET /ws?c=ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        ("GET", "/base/ws", b""),
    ),
]


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [pytest.param(data, expected, id=name) for name, data, expected in ACCEPTED],
)
def test_odd_request_is_delivered_to_the_configured_target_only(
    rig: Rig, request_bytes: bytes, expected: tuple[str, str, bytes]
) -> None:
    """Absolute-form targets, Host headers naming other machines and odd paths get a 202
    and reach the configured backend under its base path, never the host they name."""
    decoy = rig.decoy_netloc.encode()
    answer = send_raw(rig, request_bytes.replace(D.encode(), decoy))
    assert answer.status == 202, answer.head + answer.body
    marker = re.search(rb"[?&](c=[a-z0-9]+)", request_bytes)
    assert marker is not None
    got = delivered(rig, marker.group(1).decode())
    method, path, body = expected
    assert (got.method, got.path, got.body) == (method, path.replace(D, decoy.decode()), body)
    assert_healthy(rig)
    assert not any("smuggled" in r.path for r in rig.backend.received)


def test_client_forwarding_headers_are_not_believed(rig: Rig) -> None:
    """X-Forwarded-For/-Host/-Proto and Forwarded from a peer that is not a trusted proxy
    are dropped; the backend gets the real peer address and the request's own Host."""
    answer = send_raw(
        rig,
        b"GET /xff?c=xff HTTP/1.1\r\nHost: proxy.test\r\nX-Forwarded-For: 6.6.6.6\r\n"
        b"X-Forwarded-Host: " + rig.decoy_netloc.encode() + b"\r\nX-Forwarded-Proto: https\r\n"
        b"Forwarded: for=6.6.6.6;host=evil\r\nX-Real-IP: 6.6.6.6\r\n\r\n",
    )
    assert answer.status == 202
    got = delivered(rig, "c=xff")
    assert got.header("x-forwarded-for") == "127.0.0.1"
    assert got.header("x-forwarded-host") == "proxy.test"
    assert got.header("x-forwarded-proto") == "http"
    assert got.header("forwarded") is None
    assert got.header("x-real-ip") is None
    assert_healthy(rig)


# ---------------------------------------------------------------- size limits at the door


def test_body_past_the_limit_is_413_and_the_connection_closes(rig: Rig) -> None:
    """A body past the limit, declared or chunked and endless, gets 413 and the connection
    is closed instead of read to the end."""
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 5000)
        assert read_answer(sock).status == 413
        assert closed_within(sock, 5.0)
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"400\r\n" + b"a" * 1024 + b"\r\n"
        assert stream_until_refused(sock, chunk, 100_000) < 20_000_000
    assert_healthy(rig)


def test_huge_header_is_431_at_the_door_without_reading_on(rig: Rig) -> None:
    """A header line streamed without end gets 431 and a closed connection after a few
    tens of kilobytes, not megabytes buffered in memory."""
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = stream_until_refused(sock, b"a" * 10_000, 10_000)
        answer = read_answer(sock)
    assert answer.status in (431, None)  # the answer may be lost to the reset
    # The kernel's socket buffers take a few megabytes; the proxy itself read far fewer.
    assert sent < 20_000_000
    assert_healthy(rig)


def test_numerous_headers_are_431_unless_within_the_limit(rig: Rig) -> None:
    """Two thousand small headers (past max_header_bytes) get 431 and are not delivered;
    ninety-nine and Host (within max_header_bytes and at limits.max_header_count) are
    delivered, all of them; one more is 431."""
    many = b"".join(b"X-H%d: v\r\n" % n for n in range(2000))
    answer = send_raw(rig, b"GET /m?c=many HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    assert answer.status == 431
    some = b"".join(b"X-H%d: v\r\n" % n for n in range(99))
    answer = send_raw(rig, b"GET /m?c=some HTTP/1.1\r\nHost: x\r\n" + some + b"\r\n")
    assert answer.status == 202
    got = delivered(rig, "c=some")
    assert [f"x-h{n}" for n in range(99)] == [n for n, _ in got.headers if n.startswith("x-h")]
    answer = send_raw(rig, b"GET /m?c=more HTTP/1.1\r\nHost: x\r\n" + some + b"X-M: 1\r\n\r\n")
    assert answer.status == 431
    assert b"too_many_headers" in answer.body
    assert not any(r.query in ("c=many", "c=more") for r in rig.backend.received)
    assert_healthy(rig)


# ---------------------------------------------------------------- slow drip (slowloris)


def test_dripped_headers_get_408_and_free_every_connection(rig: Rig) -> None:
    """Thirty connections dripping their headers are answered 408 and closed after the
    header deadline, and the proxy serves others meanwhile."""
    socks = [socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) for _ in range(30)]
    try:
        for sock in socks:
            sock.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\n")
        assert_healthy(rig)  # served while thirty connections hang
        for sock in socks:
            # Still trickling, the deadline does not move (or, on a slow machine, the
            # connection is answered and closed already).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(b"X-Drip: 1\r\n")
        answers = [read_answer(sock) for sock in socks]
        assert {a.status for a in answers} == {408}
        assert all(b"request_timeout" in a.body for a in answers)
        assert all(closed_within(sock, 5.0) for sock in socks)
    finally:
        for sock in socks:
            sock.close()
    assert_healthy(rig)


def test_dripped_body_gets_408_and_the_connection_is_freed(rig: Rig) -> None:
    """A body dripped slower than the body deadline gets 408 and the connection closes at
    once, even while the client goes on dripping; nothing is delivered."""
    before = len(rig.backend.received)
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"POST /drip?c=body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        started = time.monotonic()
        answer = read_answer(sock)
        assert answer.status == 408
        assert b"request_timeout" in answer.body
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"cd")  # the client drips on
        # Closed by the proxy, well before uvicorn's 5 s keep-alive timeout would.
        assert closed_within(sock, 3.0)
        assert time.monotonic() - started < DEADLINE + 4.0
    assert [r for r in rig.backend.received[before:] if "c=body" in r.query] == []
    assert_healthy(rig)


# ---------------------------------------------------------------- the admin listener


def test_admin_listener_has_the_same_header_deadline_and_cap(rig: Rig) -> None:
    """The admin port answers dripped headers with 408 and an endless header with 431,
    closing both connections, and keeps serving /healthz."""
    admin_port = int(rig.proxy.admin_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", admin_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert read_answer(sock).status == 408
        assert closed_within(sock, 5.0)
    with socket.create_connection(("127.0.0.1", admin_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        assert stream_until_refused(sock, b"a" * 10_000, 10_000) < 20_000_000
    assert httpx.get(rig.proxy.admin_url + "/healthz", timeout=TIMEOUT).status_code == 200
