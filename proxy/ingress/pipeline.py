"""The ingress pipeline: any request on any path -> one Envelope -> the engine -> 202.

Two steps, for every HTTP server: :meth:`Ingress.start` judges a request's head (route,
method, API key, ids, schedule, delivery URL and headers, declared size) and
:meth:`Ingress.finish` stores it with its body and answers from a callback; every answer
is counted and logged here. The ingress listener's HTTP/1.1 protocol
(``proxy/http/ingress_protocol.py``) calls them directly; ``asgi.py`` adapts them for any
ASGI server. Per-request Python work decides ingest throughput, so the hot path does only
what it must.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Callable
from itertools import chain
from typing import Any, NamedTuple

from mypy_extensions import mypyc_attr

from proxy.auth import bearer_token, key_matches
from proxy.config.settings import Settings
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
    UnauthorizedError,
)
from proxy.http.responses import Answer, error_response_parts
from proxy.ingress.control import request_id_from, schedule_time_from, task_id_for_key
from proxy.ingress.forwarded import TrustedProxies, forwarded_scheme
from proxy.ingress.head import Head, Scope, parse_content_length, read_head
from proxy.ingress.headers import filter_headers
from proxy.ingress.routing import Route, Router
from proxy.ingress.target import check_url_length, delivery_path, delivery_query
from proxy.logs import FixedLine, emit
from proxy.metrics import Metrics

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

_NOTHING: frozenset[str] = frozenset()
_CANCELLED = EngineUnavailableError(
    "The proxy stopped before the request was stored; retry it.", retry_after=1
)
_FAILED = ProxyError("The proxy failed while storing the request; retry it.")
ALLOWED_METHODS = frozenset({"POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS"})


# The relay's ingress (proxy/relay/listener.py) is a subclass, and interpreted: this class
# is compiled (setup.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class Ingress:
    """Turns every HTTP request into a durable task on its route's queue (see the module
    docstring for the two steps)."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics) -> None:
        self.engine = engine
        self.metrics = metrics
        self.max_body = settings.limits.max_body_bytes
        self.max_headers = settings.limits.max_header_bytes
        self.max_header_count = settings.limits.max_header_count
        self.router = Router(settings)
        self.access_log = settings.server.access_log
        self.trusted_proxies = TrustedProxies(settings.server.trusted_proxies)
        self._enqueue_seconds = metrics.enqueue_seconds.labels(engine.name)
        self._answered: dict[tuple[str, int], Any] = {}  # (queue, status) -> counter child
        # At 0 from the start: panels subtract it from the 202s, which needs the series.
        self._duplicates = {
            q.name: metrics.duplicate_requests.labels(q.name) for q in settings.queues
        }
        self._in_flight = 0
        metrics.requests_in_flight.set_function(lambda: self._in_flight)
        self._submit = engine.enqueue_nowait

    # ------------------------------------------------------------ the two steps

    def start(self, scope: Scope) -> Pending | Answer:
        """The verdict on a request's head: :class:`Pending` when it is accepted, else the
        refusal to send (already counted and logged)."""
        started = time.perf_counter()
        info: dict[str, object] = {}
        queue_name = "-"
        try:
            head = read_head(scope)
            route = self.router.route(scope["path"], head.host)
            queue_name = route.queue.name
            return self._begin(scope, head, route, info)
        except Exception as exc:
            if not isinstance(exc, ProxyError):
                logger.exception("handling a request failed")
                exc = _FAILED
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
        except Exception as exc:
            self._in_flight -= 1
            if not isinstance(exc, ProxyError):
                logger.exception("enqueue failed")
                exc = _FAILED
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

    def _begin(self, scope: Scope, head: Head, route: Route, info: dict[str, object]) -> Pending:
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
        content_length = parse_content_length(length) if length is not None else None
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
        path = delivery_path(scope, route)
        query = delivery_query(scope)
        check_url_length(route, path, query)
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
            self._duplicates[envelope.queue].inc()
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

    def _authenticate(self, route: Route, control: dict[str, str]) -> frozenset[str]:
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

    def _headers(
        self,
        scope: Scope,
        route: Route,
        head: Head,
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


class Pending(NamedTuple):
    """A request whose head the ingress accepted: all it needs but the body."""

    scope: Scope
    route: Route
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


def too_large(limit: int) -> str:
    return f"The request body is larger than the limit of {limit} bytes."
