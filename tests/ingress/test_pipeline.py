"""Ingress: request -> Envelope, limits and refusals, through a real uvicorn server.

The engine here is tests.support.engines.RecordingEngine (our own protocol, in memory),
so these tests see exactly the Envelope the ingress builds; the real engines are tested
end to end in tests/engines and tests/test_e2e_*.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from uvicorn.config import LOGGING_CONFIG

from proxy.app import create_app
from proxy.auth import hash_key
from proxy.config.loading import settings_from_dict
from proxy.errors import BacklogFullError, EngineUnavailableError
from proxy.logs import logging_to
from proxy.server import ingress_options
from tests.support.engines import RecordingEngine
from tests.support.log_capture import CapturedLines
from tests.support.servers import serve_in_thread, wait_for

BACKEND = "http://127.0.0.1:9"


def _settings(**extra: Any) -> Any:
    data: dict[str, Any] = {
        "queues": [
            {"name": "default", "target": BACKEND + "/base"},
            {"name": "orders", "target": "http://127.0.0.1:10"},
        ],
        "routes": [{"prefix": "/orders", "queue": "orders", "strip_prefix": True}],
        "limits": {"max_body_bytes": 1024},
    }
    data.update(extra)
    return settings_from_dict(data)


@contextlib.contextmanager
def _proxy(**extra: Any) -> Iterator[tuple[str, RecordingEngine]]:
    engine = RecordingEngine()
    settings = _settings(**extra)
    app = create_app(settings, engine=engine)
    options = ingress_options(settings) | {"log_config": LOGGING_CONFIG, "log_level": "warning"}
    with serve_in_thread(app, **options) as url:
        yield url, engine


@pytest.fixture
def proxy() -> Iterator[tuple[str, RecordingEngine]]:
    with _proxy() as running:
        yield running


def test_request_becomes_one_envelope(proxy: tuple[str, RecordingEngine]) -> None:
    """Method, path, query, body and allowed headers are kept; the answer is 202 JSON."""
    url, engine = proxy
    response = httpx.post(
        f"{url}/a/b%2Fc?x=1&y=%20",
        content=b"hello",
        headers={"Content-Type": "text/plain", "X-Custom": "v", "Authorization": "Bearer s"},
    )
    assert response.status_code == 202
    body = response.json()
    [envelope] = engine.envelopes
    assert body == {"task": envelope.id, "queue": "default"}
    assert response.headers["x-task-id"] == envelope.id
    assert response.headers["x-request-id"] == envelope.request_id
    assert (envelope.method, envelope.path, envelope.query) == ("POST", "/a/b%2Fc", "x=1&y=%20")
    assert envelope.body == b"hello"
    headers = dict(envelope.headers)
    assert headers["content-type"] == "text/plain"
    assert headers["x-custom"] == "v"
    assert "authorization" not in headers
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == url.removeprefix("http://")
    assert headers["x-request-id"] == envelope.request_id


def test_client_request_id_is_kept(proxy: tuple[str, RecordingEngine]) -> None:
    """A well-formed X-Request-Id from the client is reused; a malformed one is replaced."""
    url, engine = proxy
    assert httpx.get(url, headers={"X-Request-Id": "req-1"}).headers["x-request-id"] == "req-1"
    replaced = httpx.get(url, headers={"X-Request-Id": "bad id!"}).headers["x-request-id"]
    assert replaced != "bad id!"
    assert len(replaced) == 32
    assert [e.request_id for e in engine.envelopes] == ["req-1", replaced]


def test_every_method_and_path_is_accepted(proxy: tuple[str, RecordingEngine]) -> None:
    """Ingress forwards every deliverable method on every path, proxy-looking paths included."""
    url, engine = proxy
    for method in ("GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"):
        assert httpx.request(method, f"{url}/metrics").status_code == 202
    assert [e.method for e in engine.envelopes] == [
        "GET",
        "HEAD",
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
    ]
    assert {e.path for e in engine.envelopes} == {"/metrics"}


def test_routing_by_prefix_with_strip(proxy: tuple[str, RecordingEngine]) -> None:
    """A route prefix picks the queue (on segment boundaries) and may be stripped."""
    url, engine = proxy
    httpx.post(f"{url}/orders/7", content=b"1")
    httpx.post(f"{url}/orders", content=b"2")
    httpx.post(f"{url}/ordersx", content=b"3")
    got = [(e.queue, e.path) for e in engine.envelopes]
    assert got == [("orders", "/7"), ("orders", "/"), ("default", "/ordersx")]


def test_idempotency_key_repeat_is_a_duplicate(proxy: tuple[str, RecordingEngine]) -> None:
    """The same Idempotency-Key twice gives the same task id, the second marked duplicate."""
    url, engine = proxy
    first = httpx.post(url, content=b"a", headers={"Idempotency-Key": "order-1"})
    second = httpx.post(url, content=b"a", headers={"Idempotency-Key": "order-1"})
    assert first.status_code == second.status_code == 202
    assert first.json()["task"] == second.json()["task"]
    assert "duplicate" not in first.json()
    assert second.json()["duplicate"] is True
    assert len(engine.envelopes) == 1
    assert "idempotency-key" not in dict(engine.envelopes[0].headers)


def test_x_delay_sets_schedule_time(proxy: tuple[str, RecordingEngine]) -> None:
    """X-Delay: 5m schedules the task five minutes after it was received; it is not forwarded."""
    url, engine = proxy
    assert httpx.post(url, headers={"X-Delay": "5m"}).status_code == 202
    [envelope] = engine.envelopes
    assert envelope.schedule_time == pytest.approx(envelope.received_at + 300)
    assert "x-delay" not in dict(envelope.headers)


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"X-Delay": "soon"}, "invalid_delay"),
        ({"X-Delay": "31d"}, "invalid_delay"),
        ({"X-Not-Before": "yesterday"}, "invalid_not_before"),
        ({"Idempotency-Key": "k" * 256}, "invalid_idempotency_key"),
        ({"X-Delay": "1", "X-Not-Before": "1"}, "conflicting_schedule"),
    ],
)
def test_bad_control_headers_are_400(
    proxy: tuple[str, RecordingEngine], headers: dict[str, str], code: str
) -> None:
    """Bad control headers get a 400 JSON error naming the problem; nothing is enqueued."""
    url, engine = proxy
    response = httpx.post(url, content=b"x", headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == code
    assert response.json()["detail"]
    assert engine.envelopes == []


def test_body_over_limit_is_413(proxy: tuple[str, RecordingEngine]) -> None:
    """A body over max_body_bytes gets 413 JSON, by Content-Length and by streamed size."""
    url, engine = proxy
    response = httpx.post(url, content=b"x" * 1025)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 200

    streamed = httpx.post(url, content=chunks())
    assert streamed.status_code == 413
    assert httpx.post(url, content=b"x" * 1024).status_code == 202
    assert len(engine.envelopes) == 1


def test_oversized_body_is_refused_before_it_is_read(proxy: tuple[str, RecordingEngine]) -> None:
    """A declared oversized body is answered 413 without waiting for the body to arrive."""
    url, _ = proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n")
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 413")


def test_body_on_get_is_400(proxy: tuple[str, RecordingEngine]) -> None:
    """Only POST, PUT and PATCH may carry a body, as in Cloud Tasks: a GET body is a 400."""
    url, engine = proxy
    response = httpx.request("GET", url, content=b"body")
    assert response.status_code == 400
    assert response.json()["error"] == "body_not_allowed"
    assert engine.envelopes == []


def test_unknown_method_is_405(proxy: tuple[str, RecordingEngine]) -> None:
    """Methods Cloud Tasks cannot deliver (TRACE, custom verbs) get 405 JSON."""
    url, _ = proxy
    for method in ("TRACE", "PURGE"):
        response = httpx.request(method, url)
        assert response.status_code == 405
        assert response.json()["error"] == "method_not_allowed"


def test_huge_headers_are_431() -> None:
    """Forwarded headers beyond max_header_bytes are refused at the door with 431."""
    with _proxy(limits={"max_header_bytes": 2048}) as (url, engine):
        response = httpx.get(url, headers={f"x-h{i}": "v" * 100 for i in range(30)})
        assert response.status_code == 431
        assert response.json()["error"] == "headers_too_large"
        assert engine.envelopes == []


def test_more_header_fields_than_the_limit_are_431() -> None:
    """More header fields than limits.max_header_count (small ones, within the byte cap)
    are refused with 431 ``too_many_headers``; as many as the limit are accepted."""
    with _proxy(limits={"max_header_count": 10}) as (url, engine):
        # httpx adds Host, Accept, Accept-Encoding, Connection and User-Agent: 5 fields.
        accepted = httpx.get(url, headers={f"x-h{i}": "v" for i in range(5)})
        refused = httpx.get(url, headers={f"x-h{i}": "v" for i in range(6)})
    assert accepted.status_code == 202
    assert refused.status_code == 431
    assert refused.json()["error"] == "too_many_headers"
    assert len(engine.envelopes) == 1


@pytest.mark.parametrize(
    ("codings", "status", "error"),
    [
        (b"gzip, chunked", 501, "transfer_coding_not_supported"),
        (b"x, chunked", 501, "transfer_coding_not_supported"),
        (b"identity\r\nTransfer-Encoding: chunked", 501, "transfer_coding_not_supported"),
    ],
)
def test_transfer_codings_other_than_chunked_are_refused(
    proxy: tuple[str, RecordingEngine], codings: bytes, status: int, error: str
) -> None:
    """A transfer coding before chunked (in one field or two) is 501: only the chunked
    coding would be removed, and the backend would get an encoded body."""
    url, engine = proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /te HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + codings
            + b"\r\n\r\n2\r\nhi\r\n0\r\n\r\n"
        )  # fmt: skip
        answer = _read_response(sock)
    assert answer.split(b" ")[1] == str(status).encode()
    assert error.encode() in answer
    assert engine.envelopes == []


def test_absolute_form_authority_is_the_forwarded_host(
    proxy: tuple[str, RecordingEngine],
) -> None:
    """An absolute-form target's authority stands for Host (RFC 9112 §3.2.2): it is
    delivered as X-Forwarded-Host; an empty path is "/"."""
    url, engine = proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET http://a.example:8080 HTTP/1.1\r\nHost: b.example\r\n\r\n")
        answer = _read_response(sock)
    assert answer.split(b" ")[1] == b"202"
    [envelope] = engine.envelopes
    assert envelope.path == "/"
    assert dict(envelope.headers)["x-forwarded-host"] == "a.example:8080"


def test_url_longer_than_cloud_tasks_limit_is_414(proxy: tuple[str, RecordingEngine]) -> None:
    """A delivery URL over 2083 characters is refused with 414 instead of failing later."""
    url, _ = proxy
    response = httpx.get(f"{url}/{'a' * 2100}")
    assert response.status_code == 414


def test_absolute_form_target_never_changes_the_destination(
    proxy: tuple[str, RecordingEngine],
) -> None:
    """An absolute-form request target keeps only its path; the host stays the configured one."""
    url, engine = proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET http://169.254.169.254/latest HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_response(sock)
    assert answer.split(b" ")[1] in (b"202", b"400")
    for envelope in engine.envelopes:
        assert envelope.path.startswith("/")
        assert "169.254" not in envelope.path


@pytest.mark.parametrize("path", ["/../admin", "/a/./b", "/a/%2e%2E/b", "/x/.."])
def test_dot_segments_are_refused(proxy: tuple[str, RecordingEngine], path: str) -> None:
    """Paths with '.' or '..' segments could escape the target's base path: 400."""
    url, engine = proxy
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        answer = _read_response(sock)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"invalid_path" in answer
    assert engine.envelopes == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (EngineUnavailableError("store down", retry_after=2.5), 503),
        (BacklogFullError("queue full", retry_after=7), 429),
    ],
)
def test_engine_refusals_carry_retry_after(error: Exception, status: int) -> None:
    """When the engine cannot take a task the client gets 503/429 with Retry-After, never 202."""
    engine = RecordingEngine(fail_with=error)  # type: ignore[arg-type]
    with serve_in_thread(create_app(_settings(), engine=engine)) as url:
        response = httpx.post(url, content=b"x")
    assert response.status_code == status
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] in ("engine_unavailable", "backlog_full")


def test_disconnect_mid_body_enqueues_nothing() -> None:
    """A client that goes away before its body is complete leaves no task behind."""
    engine = RecordingEngine()
    app = create_app(_settings(), engine=engine)
    registry = app.state.runtime.metrics.registry

    def disconnects() -> float:
        sample = registry.get_sample_value(
            "ingest_proxy_enqueue_errors_total", {"reason": "disconnected"}
        )
        return sample or 0.0

    with serve_in_thread(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        wait_for(lambda: disconnects() == 1, timeout=10, message="disconnect not seen")
        assert httpx.get(url).status_code == 202  # still serving
    assert [e.method for e in engine.envelopes] == ["GET"]


KEY = "k3y-for-tests-0123456789"


def test_api_key_required_on_a_protected_route(log_lines: CapturedLines) -> None:
    """With api_keys: no key or a wrong key is 401; a good key is 202 and is never delivered
    nor logged."""
    with _proxy(api_keys=[hash_key(KEY)]) as (url, engine):
        missing = httpx.post(url, content=b"x")
        assert missing.status_code == 401
        assert missing.json()["error"] == "unauthorized"
        wrong = httpx.post(url, content=b"x", headers={"X-Api-Key": "nope"})
        assert wrong.status_code == 401
        assert httpx.post(url, content=b"a", headers={"X-Api-Key": KEY}).status_code == 202
        bearer = httpx.post(url, content=b"b", headers={"Authorization": f"Bearer {KEY}"})
        assert bearer.status_code == 202
    assert len(engine.envelopes) == 2
    for envelope in engine.envelopes:
        names = {name for name, _ in envelope.headers}
        assert "x-api-key" not in names
        assert "authorization" not in names
        assert all(KEY not in value for _, value in envelope.headers)
    statuses = [e["status"] for e in log_lines.entries("ingest_proxy.ingress")]
    assert statuses == [401, 401, 202, 202], "one request log line per request"
    assert all(KEY not in line for line in log_lines.lines)


def test_route_can_open_itself_or_use_its_own_keys() -> None:
    """A route's own api_keys replace the top-level ones; an empty list makes it open."""
    routes = [
        {"prefix": "/open", "queue": "default", "api_keys": []},
        {"prefix": "/orders", "queue": "orders", "api_keys": [hash_key("orders-key")]},
    ]
    with _proxy(api_keys=[hash_key(KEY)], routes=routes) as (url, _):
        assert httpx.post(f"{url}/open/x").status_code == 202
        assert httpx.post(f"{url}/orders/1", headers={"X-Api-Key": KEY}).status_code == 401
        assert httpx.post(f"{url}/orders/1", headers={"X-Api-Key": "orders-key"}).status_code == 202
        assert httpx.post(f"{url}/other").status_code == 401


def test_request_log_line_has_ids_and_no_query(log_lines: CapturedLines) -> None:
    """Each request logs one line with request id, task id, queue, status and latency,
    without the query string."""
    with _proxy() as (url, engine):
        httpx.post(f"{url}/p?token=s3cret", content=b"x", headers={"X-Request-Id": "r-1"})
    [fields] = log_lines.entries("ingest_proxy.ingress")
    assert (fields["level"], fields["msg"]) == ("info", "request")
    assert fields["request_id"] == "r-1"
    assert fields["task"] == engine.envelopes[0].id
    assert (fields["queue"], fields["status"], fields["path"]) == ("default", 202, "/p")
    assert fields["latency_ms"] >= 0
    assert all("s3cret" not in line for line in log_lines.lines)


@pytest.mark.parametrize(
    ("level", "access_log", "lines"), [("info", True, 1), ("warning", True, 0), ("info", False, 0)]
)
def test_request_log_follows_level_and_access_log(level: str, access_log: bool, lines: int) -> None:
    """One line per request at level info; none at ``log_level = "warning"`` or with
    ``access_log = false``."""
    captured = CapturedLines()
    with logging_to(captured, level, "json"), _proxy(server={"access_log": access_log}) as proxy:
        url, engine = proxy
        assert httpx.post(f"{url}/p", content=b"x").status_code == 202
    assert len(engine.envelopes) == 1
    assert len(captured.entries("ingest_proxy.ingress")) == lines


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (head and Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_slow_headers_get_408_and_the_connection_is_freed() -> None:
    """A client trickling its headers (slowloris) gets 408 after header_timeout; the server
    keeps serving others."""
    with _proxy(server={"header_timeout": 0.5}) as (url, engine):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
            answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"request_timeout" in answer
        assert httpx.get(url).status_code == 202
    assert [e.method for e in engine.envelopes] == ["GET"]


def test_slow_body_gets_408_and_nothing_is_stored() -> None:
    """A body that does not arrive within body_timeout gets a 408 JSON error."""
    with _proxy(limits={"body_timeout": 0.5, "max_body_bytes": 1024}) as (url, engine):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            answer = _read_response(sock)
        assert answer.startswith(b"HTTP/1.1 408")
        assert b"request_timeout" in answer
    assert engine.envelopes == []


def test_idle_keep_alive_connection_still_serves_requests() -> None:
    """The header deadline counts from each request's first byte, not from the connection:
    a keep-alive connection idle for longer than header_timeout still serves requests."""
    with _proxy(server={"header_timeout": 0.5}) as (url, engine):
        port = int(url.rsplit(":", 1)[1])
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            assert _read_response(sock).startswith(b"HTTP/1.1 202")
            time.sleep(1.0)  # idle past header_timeout, well within uvicorn's 5 s keep-alive
            sock.sendall(request)
            assert _read_response(sock).startswith(b"HTTP/1.1 202")
    assert len(engine.envelopes) == 2


def test_ids_do_not_repeat_when_something_reseeds_random(
    proxy: tuple[str, RecordingEngine],
) -> None:
    """A random.seed() elsewhere in the process (a library, a test tool) does not make the
    ingress hand out the same task and request ids again."""
    url, engine = proxy
    answers = []
    for _ in range(2):
        random.seed(1234)
        answers.append(httpx.post(f"{url}/seeded", content=b"x", timeout=10))
    assert [a.status_code for a in answers] == [202, 202]
    assert answers[0].headers["x-task-id"] != answers[1].headers["x-task-id"]
    assert answers[0].headers["x-request-id"] != answers[1].headers["x-request-id"]
    assert len({e.id for e in engine.envelopes}) == 2
