"""The ingress listener's HTTP/1.1 protocol: requests go from the parser to the ingress.

uvicorn still runs the listener (sockets, lifespan, signals, graceful shutdown); this
protocol replaces its per-request ASGI machinery (a task, ``receive`` and ``send``
coroutines, an event per request), which cost about 14 us of the 36 us a request took on
the event loop. The ingress is called at two points: when the head is complete
(:meth:`Ingress.start`, which routes and checks it) and when the body is
(:meth:`Ingress.finish`, which enqueues it and answers once the task is durable).

HTTP handling, all tested in tests/test_http11.py:
- keep-alive (closed after ``timeout_keep_alive`` idle seconds), HTTP/1.0, ``Connection:
  close``; pipelined requests are answered one at a time, in order;
- ``Expect: 100-continue`` is answered once the head is accepted, and a head refused
  before its body arrived is answered at once with ``Connection: close``, reading no more;
- the head must be complete within ``header_timeout`` seconds of the connection or of its
  first byte and at most ``max_head_bytes`` long (else 408 or 431), the body within
  ``body_timeout`` seconds of the head (else 408), and no longer than the ingress's body
  limit (else 413, without reading the rest);
- a request the parser cannot read gets 400 and the connection is closed; an Upgrade
  request is an ordinary request, after which the connection is closed;
- reading stops while the client does not read its answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, ClassVar, cast
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.errors import BodyTooLargeError
from proxy.ingress import Answer, Ingress, Pending, declares_body, too_large
from proxy.problems import closing_response
from proxy.protocol import BODY_LATE, HEAD_LATE, HEAD_TOO_LARGE

logger = logging.getLogger("ingest_proxy.http")

_BAD_REQUEST = closing_response(400, "bad_request", "The request is not valid HTTP/1.1.")
_INTERNAL = closing_response(500, "internal_error", "The proxy failed to handle the request.")
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = (b"connection", b"close")
MAX_PIPELINED = 16  # requests read ahead of their answers before reading pauses
# A request read and waiting for its answer: (the accepted request, its body, or else the
# refusal to send), whether the connection stays open after it, and its method.
_Entry = tuple[Pending | None, bytes, Answer | None, bool, str]


def ingress_protocol(
    header_timeout: float, max_head_bytes: int, body_timeout: float
) -> type[asyncio.Protocol]:
    """The protocol class for uvicorn's ``http`` option (see the module docstring)."""
    attributes = {
        "header_timeout": header_timeout,
        "max_head_bytes": max_head_bytes,
        "body_timeout": body_timeout,
        "sweep_period": min(1.0, header_timeout / 4, body_timeout / 4),
        "sweepers": {},
    }
    return type("IngressProtocol", (IngressProtocol,), attributes)


class IngressProtocol(asyncio.Protocol):
    """One connection of the ingress listener; configured by :func:`ingress_protocol`.

    Deadlines are checked by one sweep over the server's connections every quarter of the
    shorter timeout (at most 1 s), not by a timer per request.
    """

    header_timeout: ClassVar[float] = 10.0
    max_head_bytes: ClassVar[int] = 65536
    body_timeout: ClassVar[float] = 30.0
    sweep_period: ClassVar[float] = 1.0
    sweepers: ClassVar[dict[asyncio.AbstractEventLoop, asyncio.TimerHandle]] = {}

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        ingress = getattr(config.app, "ingress", None)
        if not isinstance(ingress, Ingress):
            raise TypeError("the ingress protocol serves only the app of proxy.app.create_app")
        self.ingress = ingress
        self.max_body = ingress.max_body
        self.loop = _loop or asyncio.get_running_loop()
        self.server_state = server_state
        self.connections = server_state.connections
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.server: tuple[str, int] | None = None
        self.scheme = "http"
        # The request being read
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.expect_continue = False
        self.pending: Pending | None = None
        self.skip_body = False  # answered already (refused): its body is not read
        self.chunks: list[bytes] = []
        self.size = 0
        # Requests read, waiting for their turn, and the one being answered
        self.keep_alive = True
        self.line: deque[_Entry] = deque()
        self.busy = False
        self.closing = False  # answer what was read, then close
        self.reading = True
        self.writing_paused = False
        # Deadlines (loop time), checked by the sweep
        self.head_deadline: float | None = None
        self.head_bytes = 0
        self.body_deadline: float | None = None
        self.idle_since: float | None = None

    # ------------------------------------------------------------ connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.connections.add(cast(HttpToolsProtocol, self))  # uvicorn's typing only
        peer = self.transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client = (str(peer[0]), int(peer[1]))
        local = self.transport.get_extra_info("sockname")
        if isinstance(local, tuple) and len(local) >= 2:
            self.server = (str(local[0]), int(local[1]))
        if self.transport.get_extra_info("sslcontext") is not None:
            self.scheme = "https"
        self._arm_head()
        self._sweep_soon()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(cast(HttpToolsProtocol, self))
        self.head_deadline = self.body_deadline = self.idle_since = None
        self.line.clear()  # answers no one will read; their tasks stay enqueued
        self.pending = None

    def shutdown(self) -> None:
        """Called by uvicorn on graceful shutdown: close now when idle, else after
        answering the requests read."""
        self.closing = True
        if not self.busy and not self.line and self.pending is None:
            self.transport.close()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume_reading()

    def _pause_reading(self) -> None:
        if self.reading and not self.transport.is_closing():
            self.reading = False
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if (
            not self.reading
            and not self.writing_paused
            and not self.closing
            and len(self.line) < MAX_PIPELINED
            and not self.transport.is_closing()
        ):
            self.reading = True
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return  # refused or closed already: read no further
        self.idle_since = None
        in_head = self.head_deadline is not None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade request is answered as an ordinary one (the ingress refuses one
            # with a body); what follows its head is not HTTP: close after answering.
            self.closing = True
            self._pause_reading()
            return
        except (httptools.HttpParserError, UnicodeDecodeError, ValueError):
            self._fail(_BAD_REQUEST)
            return
        except Exception:
            logger.exception("handling a request failed")
            self._fail(_INTERNAL)
            return
        # Count only reads after which the head is still incomplete, so a body that
        # arrives in the same read as the end of the head is never counted.
        if in_head and self.head_deadline is not None:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._fail(HEAD_TOO_LARGE)

    def check_deadlines(self, now: float) -> None:
        """Close the connection if its head or body is late, or it idled too long."""
        if self.head_deadline is not None and self.head_deadline < now:
            self._fail(HEAD_LATE)
        elif self.body_deadline is not None and self.body_deadline < now:
            self._fail(BODY_LATE)
        elif self.idle_since is not None and now - self.idle_since > self.keep_alive_timeout:
            self.transport.close()

    def _fail(self, response: bytes) -> None:
        """Write ``response`` (unless other answers are owed first) and close."""
        self.head_deadline = self.body_deadline = None
        self.pending = None
        if not self.transport.is_closing():
            if not self.busy and not self.line:
                self.transport.write(response)
            self.transport.close()

    def _arm_head(self) -> None:
        self.head_bytes = 0
        self.head_deadline = self.loop.time() + self.header_timeout

    def _sweep_soon(self) -> None:
        if self.loop not in self.sweepers:
            self.sweepers[self.loop] = self.loop.call_later(self.sweep_period, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, IngressProtocol):
                connection.check_deadlines(now)
        if self.connections:
            self.sweepers[self.loop] = self.loop.call_later(self.sweep_period, self._sweep)
        else:
            del self.sweepers[self.loop]

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.expect_continue = False
        self.skip_body = False
        self.chunks = []
        self.size = 0
        if self.head_deadline is None:
            self._arm_head()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head_deadline = None
        self.body_deadline = self.loop.time() + self.body_timeout
        parser = self.parser
        http_version = parser.get_http_version()
        url = httptools.parse_url(self.url)
        raw_path: bytes = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": http_version,
            "method": parser.get_method().decode("ascii"),
            "path": path,
            "raw_path": raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "scheme": self.scheme,
            "root_path": "",
        }
        self.keep_alive = http_version != "1.0" and parser.should_keep_alive()
        verdict = self.ingress.start(scope)
        if isinstance(verdict, Pending):
            self.pending = verdict
            if self.expect_continue and not self.busy and not self.line:
                self.transport.write(_CONTINUE)
            return
        # Refused by its head. If a body follows, it is not read: answer and close.
        if parser.should_upgrade() or declares_body(self.headers):
            self._refuse_unread(verdict)
        else:
            self.skip_body = True
            self._queue((None, b"", verdict, self.keep_alive, scope["method"]))

    def on_body(self, body: bytes) -> None:
        pending = self.pending
        if self.skip_body or pending is None:
            return
        self.size += len(body)
        if self.size > self.max_body:
            refusal = self.ingress.refuse(pending, BodyTooLargeError(too_large(self.max_body)))
            self._refuse_unread(refusal)
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.body_deadline = None
        pending = self.pending
        if self.skip_body or pending is None:
            return
        self.pending = None
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._queue((pending, body, None, self.keep_alive, pending.method))

    # ------------------------------------------------------------ answering

    def _refuse_unread(self, refusal: Answer) -> None:
        method = self.pending.method if self.pending is not None else ""
        self.skip_body = True
        self.pending = None
        self.body_deadline = None
        self.closing = True
        self._pause_reading()
        self._queue((None, b"", refusal, False, method))

    def _queue(self, entry: _Entry) -> None:
        self.line.append(entry)
        if len(self.line) >= MAX_PIPELINED:
            self._pause_reading()
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Answer the requests in line, in order, one at a time."""
        while self.line and not self.busy and not self.transport.is_closing():
            pending, body, refusal, keep_alive, method = self.line.popleft()
            if pending is None:
                assert refusal is not None
                self._write(*refusal, keep_alive, method)
                continue
            self.busy = True

            def respond(
                status: int,
                headers: list[tuple[bytes, bytes]],
                payload: bytes,
                keep_alive: bool = keep_alive,
                method: str = method,
            ) -> None:
                self.busy = False
                self._write(status, headers, payload, keep_alive, method)
                self._next()

            try:
                self.ingress.finish(pending, body, respond)
            except Exception:
                logger.exception("handling a request failed")
                self._fail(_INTERNAL)

    def _write(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        payload: bytes,
        keep_alive: bool,
        method: str,
    ) -> None:
        """One response in one system call; close the connection after it unless it is
        kept alive."""
        transport = self.transport
        if transport.is_closing():
            return  # the client left: the task, if any, stays enqueued
        self.server_state.total_requests += 1
        keep_alive = keep_alive and not self.closing and _CLOSE not in headers
        parts = [_STATUS_LINES[status]]
        for name, value in self.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if not keep_alive and _CLOSE not in headers:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        if method != "HEAD":
            parts.append(payload)
        transport.write(b"".join(parts))
        if not keep_alive:
            transport.close()
            return
        self._resume_reading()
        if not self.line and self.pending is None:
            self.idle_since = self.loop.time()
