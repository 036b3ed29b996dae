"""Ingress: any request on any path -> one Envelope -> engine.enqueue() -> 202.

A plain ASGI callable rather than a Starlette route: per-request Python work decides
ingest throughput, so the hot path does only what it must.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple
from urllib.parse import quote

from proxy.auth import bearer_token, key_matches
from proxy.config.settings import QueueSettings, RouteSettings, Settings
from proxy.engines import Engine
from proxy.engines.delivery import BODY_METHODS
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import (
    BadRequestError,
    BodyTooLargeError,
    EngineUnavailableError,
    HeadersTooLargeError,
    MethodNotAllowedError,
    ProxyError,
    TransferCodingError,
    UnauthorizedError,
    UriTooLongError,
)
from proxy.http.responses import Answer, error_response_parts
from proxy.ingress.forwarded import TrustedProxies, forwarded_scheme
from proxy.ingress.headers import (
    filter_headers,
    request_id_from,
    schedule_time_from,
    task_id_for_key,
)
from proxy.limits import MAX_URL_LENGTH
from proxy.logs import FixedLine, emit
from proxy.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Respond = Callable[[int, list[tuple[bytes, bytes]], bytes], None]

logger = logging.getLogger("ingest_proxy.ingress")
# The access line of a 202 (info holds request_id and task only), the usual one.
_ACCEPTED_LINE = FixedLine(
    logger,
    logging.INFO,
    "request",
    ("request_id", "task", "queue", "method", "path", "status", "latency_ms"),
)

# Task and request ids need to be unique, not secret: nothing can be read or changed by
# naming a task at the ingress, and an Idempotency-Key's id (40 hex digits) never has the
# length of a random one (32). A Python generator seeded from the OS costs no system call.
# os.urandom would, and it lets go of the GIL around it: with the SQLite writer thread
# waiting for the GIL, each request then waited for the writer's turn (about 13 us per
# request, measured). The generator is our own, not the random module's: a random.seed()
# anywhere else in the process (a library, a test tool) would otherwise repeat ids. It is
# seeded again in a forked child, or workers forked from one parent would share ids.
_ids = random.Random()  # noqa: S311 - unique, not secret (above)
os.register_at_fork(after_in_child=_ids.seed)
_random_bits = _ids.getrandbits

# The request headers the ingress itself reads (uvicorn gives lower-case names).
_HOST, _CONTENT_LENGTH, _UPGRADE, _TRANSFER_ENCODING, _FORWARDED_FOR, _FORWARDED_PROTO = range(6)
_READ: dict[bytes, int | str] = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"upgrade": _UPGRADE,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-forwarded-proto": _FORWARDED_PROTO,
} | {
    name.encode(): name
    for name in (
        "idempotency-key",
        "x-delay",
        "x-not-before",
        "x-request-id",
        "x-api-key",
        "authorization",
    )
}
_NOTHING: frozenset[str] = frozenset()
_CANCELLED = EngineUnavailableError(
    "The proxy stopped before the request was stored; retry it.", retry_after=1
)
_FAILED = ProxyError("The proxy failed while storing the request; retry it.")
ALLOWED_METHODS = frozenset({"POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"
# Characters RFC 3986 does not allow as they are (and a "%" that starts no escape): they
# are percent-encoded, so the delivery URL is the same for every engine and HTTP client.
_UNSAFE_PATH = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9/%:@!$&'()*+,;=._~-]")
_UNSAFE_QUERY = re.compile(r"%(?![0-9A-Fa-f]{2})|[^A-Za-z0-9/?%:@!$&'()*+,;=._~-]")
# host [":" port]: a reg-name (letters, digits, "-._~", sub-delims, %XX) or an IP literal.
_GOOD_HOSTS: dict[bytes, str] = {}  # Host values seen valid (bounded: they are client input)
_GOOD_HOSTS_MAX = 256
_HOST_RE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{0,5})?")


@dataclass(frozen=True, slots=True)
class _Route:
    settings: RouteSettings
    queue: QueueSettings
    prefix: str  # without a trailing slash; "" for the catch-all
    api_keys: tuple[str, ...]
    target_length: int = field(init=False)  # of the target URL the path is appended to

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_length", len(self.queue.target.rstrip("/")))

    def matches(self, path: str, host: str) -> bool:
        if self.settings.host is not None and host != self.settings.host:
            return False
        prefix = self.prefix
        return not prefix or path == prefix or path.startswith(prefix + "/")


class Ingress:
    """ASGI app that turns every HTTP request into a durable task on its route's queue."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_body = settings.limits.max_body_bytes
        self.max_headers = settings.limits.max_header_bytes
        self.max_header_count = settings.limits.max_header_count
        self.routes = [
            _Route(
                route,
                settings.queue(route.queue),
                route.prefix.rstrip("/"),
                settings.route_api_keys(route),
            )
            for route in settings.effective_routes
        ]
        self._host_routes = any(route.settings.host is not None for route in self.routes)
        self.access_log = settings.server.access_log
        self.trusted_proxies = TrustedProxies(settings.server.trusted_proxies)
        self._enqueue_seconds = metrics.enqueue_seconds.labels(engine.name)
        self._answered: dict[tuple[str, int], Any] = {}  # (queue, status) -> counter child
        self._in_flight = 0
        metrics.requests_in_flight.set_function(lambda: self._in_flight)
        submit = getattr(engine, "enqueue_nowait", None)
        self._submit: Callable[[Envelope], asyncio.Future[EnqueueResult]] = (
            submit if submit is not None else lambda env: asyncio.ensure_future(engine.enqueue(env))
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.perf_counter()
        self._in_flight += 1
        queue_name = "-"
        info: dict[str, object] = {}
        body_read = False
        try:
            head = _read_head(scope)
            route = self._route(scope["path"], head.host)
            queue_name = route.queue.name
            pending = self._begin(scope, head, route, info)
            body = await self._receive_body(receive, pending)
            body_read = True
            envelope = self._envelope(pending, body)
            enqueued = time.perf_counter()
            result = await self.engine.enqueue(envelope)
            status, headers, payload = self._accepted(pending, envelope, result, enqueued)
        except Exception as exc:
            if not isinstance(exc, ProxyError):
                logger.exception("handling a request failed")
                exc = _FAILED
            status, headers, payload = self._refused(exc, info)
            if not body_read and declares_body(scope["headers"]):
                # Refused before its body was read (too large, too slow, bad headers): close
                # the connection rather than read on, or a client dripping the rest of the
                # body would hold it open with no deadline.
                headers.append((b"connection", b"close"))
        finally:
            self._in_flight -= 1
        self._record(scope, queue_name, status, started, info)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    # ------------------------------------------------------------ for http/ingress_protocol.py

    def start(self, scope: Scope) -> Pending | Answer:
        """The verdict on a request's head: :class:`Pending` when it is accepted, else the
        refusal to send (already counted and logged)."""
        started = time.perf_counter()
        info: dict[str, object] = {}
        queue_name = "-"
        try:
            head = _read_head(scope)
            route = self._route(scope["path"], head.host)
            queue_name = route.queue.name
            return self._begin(scope, head, route, info)
        except ProxyError as exc:
            answer = self._refused(exc, info)
            self._record(scope, queue_name, answer[0], started, info)
            return answer

    def refuse(self, pending: Pending, exc: ProxyError) -> Answer:
        """The refusal of ``pending`` (counted and logged)."""
        answer = self._refused(exc, pending.info)
        self._record_pending(pending, answer[0])
        return answer

    def finish(self, pending: Pending, body: bytes, respond: Respond) -> None:
        """Enqueue ``pending`` with its ``body``; ``respond(status, headers, payload)`` is
        called once, when the task is durable or refused (maybe before this returns)."""
        self._in_flight += 1
        try:
            envelope = self._envelope(pending, body)
            future = self._submit(envelope)
        except ProxyError as exc:
            self._in_flight -= 1
            respond(*self.refuse(pending, exc))
            return
        enqueued = time.perf_counter()

        def done(future: asyncio.Future[EnqueueResult]) -> None:
            self._in_flight -= 1
            try:
                result = future.result()
            except ProxyError as exc:
                answer = self.refuse(pending, exc)
            except asyncio.CancelledError:
                answer = self.refuse(pending, _CANCELLED)
            except Exception:
                logger.exception("enqueue failed")
                answer = self.refuse(pending, _FAILED)
            else:
                answer = self._accepted(pending, envelope, result, enqueued)
                self._record_pending(pending, answer[0])
            respond(*answer)

        future.add_done_callback(done)

    # ------------------------------------------------------------ the steps of a request

    def _begin(self, scope: Scope, head: _Head, route: _Route, info: dict[str, object]) -> Pending:
        """What the head decides: method, ids, schedule, delivery path and headers, and
        whether the declared body is within the limit."""
        started = time.perf_counter()
        method = scope["method"]
        if len(scope["headers"]) > self.max_header_count:
            # Most backends refuse more (Apache and Envoy: 100): the task could never be
            # delivered.
            raise HeadersTooLargeError(
                f"The request has more than {self.max_header_count} header fields.",
                code="too_many_headers",
            )
        if method not in ALLOWED_METHODS:
            raise MethodNotAllowedError(
                f"Method {method} cannot be delivered; use one of "
                "POST, GET, HEAD, PUT, DELETE, PATCH, OPTIONS."
            )
        length = head.content_length
        content_length = _content_length(length) if length is not None else None
        if head.upgrade and (head.chunked or content_length):
            # The HTTP parser hands what follows an Upgrade request's head to the new
            # protocol, so its body would be lost: refuse rather than deliver it empty.
            raise BadRequestError(
                "A request asking for a protocol upgrade cannot carry a body; "
                "send it without the Upgrade header.",
                code="upgrade_with_body",
            )
        control = head.control
        now = time.time()
        fresh = f"{_random_bits(256):064x}"  # a random task id and request id
        if control or route.api_keys:
            drop = self._authenticate(route, control)
            schedule_time = schedule_time_from(
                control.get("x-delay"), control.get("x-not-before"), now
            )
            key = control.get("idempotency-key")
            task_id = task_id_for_key(key) if key is not None else fresh[:32]
            request_id = request_id_from(control.get("x-request-id")) or fresh[32:]
        else:  # no control or credential header, no key required: the common case
            drop, schedule_time, key = _NOTHING, None, None
            task_id, request_id = fresh[:32], fresh[32:]
        info["request_id"] = request_id
        path = self._delivery_path(scope, route)
        query = ""
        raw_query = scope.get("query_string")
        if raw_query:
            query = raw_query.decode("latin-1")
            if _UNSAFE_QUERY.search(query) is not None:
                query = _UNSAFE_QUERY.sub(_percent_encode, query)
        # The length of delivery.target_url(): target + path [+ "?" + query].
        if route.target_length + len(path) + (len(query) + 1 if query else 0) > MAX_URL_LENGTH:
            raise UriTooLongError(
                f"The delivery URL would be longer than {MAX_URL_LENGTH} characters."
            )
        forwarded = self._headers(scope, route, head, request_id, drop)
        if content_length is not None and content_length > self.max_body:
            raise BodyTooLargeError(too_large(self.max_body))
        return Pending(
            scope,
            route,
            method,
            task_id,
            request_id,
            key,
            schedule_time,
            path,
            query,
            tuple(forwarded),
            now,
            started,
            info,
        )

    async def _receive_body(self, receive: Receive, pending: Pending) -> bytes:
        # The body deadline (limits.body_timeout) is enforced by the HTTP protocol
        # (proxy/http/admin_protocol.py's guard): a late body is answered 408 there and
        # reaches us as a disconnect, which costs nothing per request here.
        message = await receive()
        if message["type"] == "http.request" and not message.get("more_body", False):
            body: bytes = message.get("body", b"")  # the whole body in one message: usual
            if len(body) > self.max_body:
                raise BodyTooLargeError(too_large(self.max_body))
            return body
        return await self._read_body(receive, message)

    def _envelope(self, pending: Pending, body: bytes) -> Envelope:
        method = pending.method
        if len(body) > self.max_body:
            raise BodyTooLargeError(too_large(self.max_body))
        if body and method not in BODY_METHODS:
            raise BadRequestError(
                f"A {method} request cannot carry a body; only POST, PUT and PATCH can.",
                code="body_not_allowed",
            )
        return Envelope(
            id=pending.task_id,
            queue=pending.route.queue.name,
            method=method,
            path=pending.path,
            query=pending.query,
            headers=pending.headers,
            body=body,
            received_at=pending.now,
            schedule_time=pending.schedule_time,
            idempotency_key=pending.key,
            request_id=pending.request_id,
        )

    def _accepted(
        self, pending: Pending, envelope: Envelope, result: EnqueueResult, enqueued: float
    ) -> Answer:
        """The 202 for a durable task (and its metrics)."""
        self._enqueue_seconds.observe(time.perf_counter() - enqueued)
        self.metrics.request_body_bytes.observe(len(envelope.body))
        info = pending.info
        info["task"] = result.task_id
        if result.duplicate:
            info["duplicate"] = True
        duplicate = ', "duplicate": true' if result.duplicate else ""
        payload = f'{{"task": "{result.task_id}", "queue": "{result.queue}"{duplicate}}}'.encode()
        return (
            202,
            [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-task-id", result.task_id.encode()),
                (b"x-request-id", pending.request_id.encode()),
            ],
            payload,
        )

    def _refused(self, exc: ProxyError, info: dict[str, object]) -> Answer:
        self.metrics.enqueue_errors.labels(exc.code).inc()
        info["error"] = exc.code
        return error_response_parts(exc)

    def _record(
        self, scope: Scope, queue_name: str, status: int, started: float, info: dict[str, object]
    ) -> None:
        """Count the answer; log the request when the access log is on."""
        counter = self._answered.get((queue_name, status))
        if counter is None:
            counter = self._answered[(queue_name, status)] = self.metrics.requests.labels(
                queue_name, str(status)
            )
        counter.inc()
        if self.access_log and logger.isEnabledFor(logging.INFO):
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            if status == 202 and len(info) == 2:
                _ACCEPTED_LINE.emit(
                    info["request_id"],
                    info["task"],
                    queue_name,
                    scope["method"],
                    scope["path"],  # never the query string: it may carry secrets
                    status,
                    latency_ms,
                )
                return
            info.update(
                queue=queue_name,
                method=scope["method"],
                path=scope["path"],  # never the query string: it may carry secrets
                status=status,
                latency_ms=latency_ms,
            )
            emit(logger, logging.INFO, "request", info)  # never blocks (proxy/logsink.py)

    def _record_pending(self, pending: Pending, status: int) -> None:
        self._record(pending.scope, pending.route.queue.name, status, pending.started, pending.info)

    def _route(self, path: str, host: str | None) -> _Route:
        name = host.lower().rsplit(":", 1)[0] if host and self._host_routes else ""
        for route in self.routes:
            if route.matches(path, name):
                return route
        raise AssertionError("the catch-all route always matches")  # pragma: no cover

    def _authenticate(self, route: _Route, control: dict[str, str]) -> frozenset[str]:
        """Check the route's API key; return the credential headers never to deliver."""
        if not route.api_keys:
            return frozenset()
        presented = control.get("x-api-key")
        drop = {"x-api-key"}
        if presented is None:
            presented = bearer_token(control.get("authorization"))
            drop.add("authorization")
        if presented is None or not key_matches(presented, route.api_keys):
            raise UnauthorizedError(
                "A valid API key is required: send it as X-Api-Key or Authorization: Bearer."
            )
        return frozenset(drop)

    def _delivery_path(self, scope: Scope, route: _Route) -> str:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else quote(scope["path"], safe=_PATH_SAFE)
        if not path.startswith("/"):
            raise BadRequestError(
                "The request target must be a path starting with '/'.", code="invalid_target"
            )
        if _UNSAFE_PATH.search(path) is not None:
            path = _UNSAFE_PATH.sub(_percent_encode, path)
        if ("." in path or "%2" in path) and _has_dot_segment(path):
            raise BadRequestError(
                "The path may not contain '.' or '..' segments.", code="invalid_path"
            )
        if route.settings.strip_prefix and route.prefix:
            path = path[len(route.prefix) :] or "/"
            if not path.startswith("/"):
                path = "/" + path
        return path

    def _headers(
        self,
        scope: Scope,
        route: _Route,
        head: _Head,
        request_id: str,
        drop: frozenset[str],
    ) -> list[tuple[str, str]]:
        forwarded = filter_headers(
            scope["headers"],
            forward_authorization=route.settings.forward_authorization,
            forward_cookies=route.settings.forward_cookies,
            drop=drop,
        )
        peer = scope.get("client")
        client = str(peer[0]) if peer else None
        scheme = str(scope.get("scheme", "http"))
        if (
            (head.forwarded_for or head.forwarded_proto)
            and client is not None
            and client in self.trusted_proxies
        ):
            if head.forwarded_for:
                client = self.trusted_proxies.client(head.forwarded_for) or client
            if head.forwarded_proto:
                scheme = forwarded_scheme(head.forwarded_proto) or scheme
        if client:
            forwarded.append(("x-forwarded-for", client))
        forwarded.append(("x-forwarded-proto", scheme))
        if head.host is not None:
            forwarded.append(("x-forwarded-host", head.host))
        forwarded.append(("x-request-id", request_id))
        size = sum(map(len, chain.from_iterable(forwarded))) + 4 * len(forwarded)
        if size > self.max_headers:
            raise HeadersTooLargeError(
                f"The forwarded headers total {size} bytes; the limit is {self.max_headers}."
            )
        return forwarded

    async def _read_body(self, receive: Receive, message: Message) -> bytes:
        """The body of which ``message`` is the first part."""
        chunks: list[bytes] = []
        size = 0
        while True:
            if message["type"] == "http.disconnect":
                raise BadRequestError(
                    "The client disconnected before the body was complete.", code="disconnected"
                )
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > self.max_body:
                    raise BodyTooLargeError(too_large(self.max_body))
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
            message = await receive()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def declares_body(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request says a body follows (Content-Length above 0 or chunked)."""
    for name, value in raw_headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0")):
            return True
    return False


def _has_dot_segment(path: str) -> bool:
    """Whether a segment is ``.`` or ``..`` (also percent-encoded, between backslashes or
    encoded slashes, which some servers treat as ``/``, or followed by ``;`` parameters,
    which Java servers strip: ``/..;/``): such a path could climb out of the target's base
    path once a client or server normalises it."""
    text = path.lower().replace("%2e", ".").replace("%2f", "/").replace("%5c", "/")
    text = text.replace("%3b", ";")
    return any(segment.split(";", 1)[0] in (".", "..") for segment in text.split("/"))


def _percent_encode(match: re.Match[str]) -> str:
    """``%XX`` for a character a URL may not carry as it is (the request's own byte)."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("latin-1"))


class Pending(NamedTuple):
    """A request whose head the ingress accepted: all it needs but the body."""

    scope: Scope
    route: _Route
    method: str
    task_id: str
    request_id: str
    key: str | None  # the Idempotency-Key
    schedule_time: float | None
    path: str  # of the delivery URL
    query: str
    headers: tuple[tuple[str, str], ...]  # to deliver
    now: float  # Unix time received
    started: float  # perf_counter() at the start
    info: dict[str, object]  # for the request log


class _Head(NamedTuple):
    """What the ingress reads from the request headers."""

    host: str | None
    control: dict[str, str]  # control and credential headers by (lower-case) name
    content_length: bytes | None
    upgrade: bool
    chunked: bool
    forwarded_for: str | None  # believed only from a trusted proxy
    forwarded_proto: str | None


def _read_head(scope: Scope) -> _Head:
    """The headers the ingress reads, in one pass over them.

    Raises :class:`BadRequestError` (``invalid_host``) for what RFC 9112 says a server must
    refuse with 400: an HTTP/1.1 request without Host, several Host headers, or a value
    that is not ``host[:port]``; and :class:`TransferCodingError` (501) for a transfer
    coding other than ``chunked`` alone. The host (the ``authority`` of an absolute-form
    target, when the HTTP protocol puts one in the scope) is delivered as
    ``X-Forwarded-Host``.
    """
    control: dict[str, str] = {}
    found: bytes | None = None
    length: bytes | None = None
    upgrade = False
    codings: bytes | None = None  # of Transfer-Encoding, its fields joined with ","
    forwarded_for = forwarded_proto = None
    for name, value in scope["headers"]:
        kind = _READ.get(name)
        if kind is None:
            continue
        if isinstance(kind, str):
            control[kind] = value.decode("latin-1")
        elif kind == _HOST:
            if found is not None:
                raise BadRequestError("Send one Host header, not several.", code="invalid_host")
            found = value
        elif kind == _CONTENT_LENGTH:
            # Several are refused as not a whole number ("5,5"), as RFC 9112 allows.
            length = value if length is None else length + b"," + value
        elif kind == _UPGRADE:
            upgrade = True
        elif kind == _TRANSFER_ENCODING:
            codings = value if codings is None else codings + b"," + value
        elif kind == _FORWARDED_FOR:
            hops = value.decode("latin-1")
            forwarded_for = hops if forwarded_for is None else f"{forwarded_for}, {hops}"
        else:
            forwarded_proto = value.decode("latin-1")
    chunked = False
    if codings is not None:
        _check_codings(codings, scope)
        chunked = True
    host = _host_value(found, scope)
    authority = scope.get("authority")  # of an absolute-form target: stands for Host
    if authority is not None:
        host = _host_value(authority, scope)
    return _Head(host, control, length, upgrade, chunked, forwarded_for, forwarded_proto)


def _check_codings(codings: bytes, scope: Scope) -> None:
    """Refuse transfer codings other than ``chunked`` alone: 400 when chunked is not the
    last (the body's length cannot be known, RFC 9112 §6.3), else 501 (RFC 9112 §6.1):
    the parser removes only the chunked coding, so the backend would get a body still
    encoded (gzip, say) under the client's Content-Type. Any coding on HTTP/1.0 is 400."""
    if scope.get("http_version") == "1.0":
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is faulty framing.
        raise BadRequestError(
            "An HTTP/1.0 request cannot use Transfer-Encoding; use HTTP/1.1 or Content-Length.",
            code="transfer_encoding_in_http10",
        )
    if codings.strip().lower() == b"chunked":
        return
    names = [name.strip().lower() for name in codings.split(b",")]
    if names[-1] != b"chunked":
        raise BadRequestError(
            "Transfer-Encoding must end with chunked.", code="invalid_transfer_encoding"
        )
    raise TransferCodingError(
        "Only 'Transfer-Encoding: chunked' is supported; send the body with Content-Length "
        "or chunked alone."
    )


def _host_value(found: bytes | None, scope: Scope) -> str | None:
    """The request's Host (``None`` when an HTTP/1.0 request has none)."""
    if found is None:
        if scope.get("http_version", "1.1") == "1.0":
            return None
        raise BadRequestError("An HTTP/1.1 request needs a Host header.", code="invalid_host")
    host = _GOOD_HOSTS.get(found)
    if host is None:
        if _HOST_RE.fullmatch(found) is None:
            raise BadRequestError("The Host header is not a host[:port].", code="invalid_host")
        host = found.decode("ascii")
        if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX:
            _GOOD_HOSTS[found] = host
    return host


def _content_length(value: bytes) -> int:
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0:
        raise BadRequestError(
            "Content-Length is not a whole number.", code="invalid_content_length"
        )
    return length


def too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."
