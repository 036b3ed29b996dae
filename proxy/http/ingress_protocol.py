"""The ingress listener's HTTP/1.1 protocol: requests go from the parser to the ingress.

uvicorn still runs the listener (sockets, lifespan, signals, graceful shutdown); this
protocol replaces its per-request ASGI machinery (a task, ``receive`` and ``send``
coroutines, an event per request), which cost about 14 us of the 36 us a request took on
the event loop. The ingress is called at two points: when the head is complete
(:meth:`Ingress.start`, which routes and checks it) and when the body is
(:meth:`Ingress.finish`, which enqueues it and answers once the task is durable).

HTTP handling, tested in tests/http/test_ingress_protocol.py and, over raw sockets against the whole
proxy on both event loops, in tests/security/test_framing.py:
- keep-alive (closed after ``timeout_keep_alive`` idle seconds), HTTP/1.0, ``Connection:
  close``; pipelined requests are answered one at a time, in order;
- ``Expect: 100-continue`` is answered once the head is accepted, and a head refused
  before its body arrived is answered at once with ``Connection: close``, reading no more;
- the head must be complete within ``header_timeout`` seconds of the connection or of its
  first byte and at most ``max_head_bytes`` long (else 408 or 431), the body within
  ``body_timeout`` seconds of the head (else 408), and no longer than the ingress's body
  limit (else 413, without reading the rest);
- the framing of a chunked body (chunk sizes, chunk extensions, trailer fields) may take
  at most ``max_head_bytes`` of the reads inside the body (else 431, without reading on):
  the parser keeps a trailer field whole in memory until it ends;
- a request the parser cannot read gets 400 and the connection is closed, after the
  answers owed to the requests before it (RFC 9112 §9.6); so does a client that closes
  its side in the middle of a request; one that closes it after whole requests gets their
  answers, then the connection closes; bytes after a request that ends the connection
  (``Connection: close``, HTTP/1.0) are not read;
- HTTP/1.x with x > 1 is read as HTTP/1.1, other major versions get 505 (RFC 9110
  §2.5, §15.6.6); an absolute-form target's authority stands for Host (RFC 9112 §3.2.2),
  and one with userinfo or a scheme other than http(s) gets 400;
- an Upgrade request is an ordinary request, after which the connection is closed;
- at most ``MAX_PIPELINED`` requests are read ahead of their answers, even from one read
  (the rest of its bytes wait unparsed), and none is handed to the engine while the client
  does not read its answers (writing is paused).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import unquote

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.errors import BodyTooLargeError
from proxy.http.admin_protocol import BODY_LATE_PARTS, HEAD_LATE_PARTS, HEAD_TOO_LARGE_PARTS
from proxy.http.request_target import BAD_TARGET, TargetError, absolute_form, origin_form
from proxy.http.responses import Answer, refusal_parts
from proxy.ingress.head import declares_body
from proxy.ingress.pipeline import Ingress, Pending, too_large

logger = logging.getLogger("ingest_proxy.http")

_BAD_REQUEST = refusal_parts(400, "bad_request", "The request is not valid HTTP/1.1.")
_INCOMPLETE = refusal_parts(
    400, "incomplete_request", "The client closed its side before the request was complete."
)
_INTERNAL = refusal_parts(500, "internal_error", "The proxy failed to handle the request.")
_VERSION = refusal_parts(
    505, "http_version_not_supported", "Only HTTP/1.0 and HTTP/1.1 requests are served."
)
_FRAMING_TOO_LARGE = refusal_parts(
    431,
    "framing_too_large",
    "The chunked body's framing (chunk sizes, chunk extensions, trailer fields) is too large.",
)
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = (b"connection", b"close")
MAX_PIPELINED = 16  # requests read ahead of their answers before reading pauses
# A request read and waiting for its answer: (the accepted request, its body, or else the
# refusal to send), whether the connection stays open after it, and its method.
_Entry = tuple[Pending | None, bytes, Answer | None, bool, str]
_HEAD_END = b"\r\n\r\n"  # every request head ends so (the parser takes no bare LF)


def _lfs_before(data: bytes, end: int, most: int) -> int:
    """The number of LFs in ``data[:end]``, counting no further than ``most``."""
    count = 0
    found = data.find(10, 0, end)
    while found >= 0 and count < most:
        count += 1
        found = data.find(10, found + 1, end)
    return count


class _StoppedError(Exception):
    """Raised in a parser callback to stop parsing: the connection reads no more requests."""


class ProtocolLimits:
    """The listener's time and size limits, shared by its connections, and the pending
    deadline sweep of each event loop."""

    __slots__ = ("body_timeout", "header_timeout", "max_head_bytes", "sweep_period", "sweepers")

    def __init__(self, header_timeout: float, max_head_bytes: int, body_timeout: float) -> None:
        self.header_timeout = header_timeout  # seconds
        self.max_head_bytes = max_head_bytes
        self.body_timeout = body_timeout  # seconds
        self.sweep_period = min(1.0, header_timeout / 4, body_timeout / 4)  # seconds
        self.sweepers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}


def ingress_protocol(
    header_timeout: float, max_head_bytes: int, body_timeout: float
) -> type[asyncio.Protocol]:
    """The protocol factory for uvicorn's ``http`` option (see the module docstring);
    timeouts in seconds. uvicorn only calls what it is given, with the arguments of a
    protocol class; a factory, not a subclass, because the class may be compiled."""
    limits = ProtocolLimits(header_timeout, max_head_bytes, body_timeout)

    def protocol(
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> IngressProtocol:
        return IngressProtocol(limits, config, server_state, app_state, _loop)

    return cast(type[asyncio.Protocol], protocol)


class IngressProtocol(asyncio.Protocol):
    """One connection of the ingress listener; made by :func:`ingress_protocol`'s factory.

    Deadlines are checked by one sweep over the server's connections every quarter of the
    shorter timeout (at most 1 s), not by a timer per request.
    """

    def __init__(
        self,
        limits: ProtocolLimits,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        ingress = getattr(config.app, "ingress", None)
        if not isinstance(ingress, Ingress):
            raise TypeError("the ingress protocol serves only the app of proxy.app.create_app")
        self.ingress = ingress
        self.limits = limits
        self.header_timeout = limits.header_timeout
        self.max_head_bytes = limits.max_head_bytes
        self.body_timeout = limits.body_timeout
        self.sweepers = limits.sweepers
        self.max_body = ingress.max_body
        self.loop = _loop or asyncio.get_running_loop()
        self.server_state = server_state
        self.connections = server_state.connections
        self.keep_alive_timeout = float(config.timeout_keep_alive)
        self.parser = httptools.HttpRequestParser(self)
        # Any HTTP/d.d parses, so that versions other than 1.0 and 1.1 get 505 (or are read
        # as 1.1) instead of a parser error.
        self.parser.set_dangerous_leniencies(lenient_version=True)
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
        self.framing = 0  # bytes of the body's reads that were not body (chunked framing)
        # Requests read, waiting for their turn, and the one being answered
        self.keep_alive = True
        self.line: deque[_Entry] = deque()
        self.busy = False
        self.closing = False  # answer what was read, then close
        self.stopped = False  # no more requests are read on this connection
        self.reading = True
        self.writing_paused = False
        self.unread = b""  # received but not parsed: the line was full
        self.unread_soon = False  # a call to parse it is scheduled
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
        self.unread = b""

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
        self._next()
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
            if self.unread:
                if not self.unread_soon:  # never parse from inside a parser callback
                    self.unread_soon = True
                    self.loop.call_soon(self._parse_unread)
                return
            self.reading = True
            self.transport.resume_reading()

    def _parse_unread(self) -> None:
        self.unread_soon = False
        data, self.unread = self.unread, b""
        if data and not self.stopped and not self.transport.is_closing():
            self._parse_in_turn(data)
        self._resume_reading()

    def data_received(self, data: bytes, piece: bool = False) -> None:
        """Parse ``data``; ``piece``: a piece cut by :meth:`_parse_in_turn`."""
        if self.stopped:
            return  # refused, ended or closed already: read no further
        self.idle_since = None
        if not piece:
            # At most 1 + n // 2 requests end in ``data``, n its LFs up to its last CR: the
            # one under way, and each that starts in it, which ends its head with CRLF CRLF.
            # Two C scans of a few dozen bytes for a usual request (its body holds no CR).
            most = 2 * (MAX_PIPELINED - len(self.line))
            end = data.rfind(13) + 2
            if (data.count(10, 0, end) if end < 4096 else _lfs_before(data, end, most)) >= most:
                self._parse_in_turn(data)
                return
        in_head = self.head_deadline is not None
        in_body = self.pending if self.body_deadline is not None else None
        if in_body is not None:
            size = self.size
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # An Upgrade request is answered as an ordinary one (the ingress refuses one
            # with a body); what follows its head is not HTTP: close after answering.
            self._stop_reading()
            return
        except httptools.HttpParserError as exc:
            if self.stopped:
                return  # bytes after the connection's last request: not read
            bug = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
            if bug is not None:  # raised by our own callback: not the client's fault
                logger.error("handling a request failed", exc_info=bug)
                self._fail(_INTERNAL)
            else:
                self._fail(_BAD_REQUEST)
            return
        except Exception:
            logger.exception("handling a request failed")
            self._fail(_INTERNAL)
            return
        # Count only reads after which the head is still incomplete, so a body that
        # arrives in the same read as the end of the head is never counted; likewise
        # the framing only of reads inside one body.
        if in_head and self.head_deadline is not None:
            self.head_bytes += len(data)
            if self.head_bytes > self.max_head_bytes:
                self._fail(HEAD_TOO_LARGE_PARTS)
        elif in_body is not None and in_body is self.pending and self.body_deadline is not None:
            self.framing += len(data) - (self.size - size)
            if self.framing > self.max_head_bytes:
                self._fail(_FRAMING_TOO_LARGE)

    def _parse_in_turn(self, data: bytes) -> None:
        """Parse ``data`` in pieces that end at most as many requests as the line has room
        for; keep the rest unparsed, reading paused, when the line is full."""
        start, end_of_data = 0, len(data)
        while start < end_of_data and not self.stopped:
            room = MAX_PIPELINED - len(self.line)
            if room <= 0:
                self.unread = data[start:]
                self._pause_reading()
                return
            end = data.find(_HEAD_END, start)
            if end < 0:
                end = end_of_data
            else:  # ends at most 2 requests, or with no whole _HEAD_END in it, 1
                end += 4 if room >= 2 else 3
            self.data_received(data[start:end], piece=True)
            start = end

    def eof_received(self) -> bool:
        """The client closed its side: answer the requests it sent (a request it left
        incomplete with 400), then close."""
        if not self.stopped:
            incomplete = self.body_deadline is not None or (
                self.head_deadline is not None and bool(self.url)
            )
            self._fail(_INCOMPLETE if incomplete else None)
        # True keeps the transport open to write the answers still owed.
        return not self.transport.is_closing()

    def check_deadlines(self, now: float) -> None:
        """Refuse a late head or body (closing the connection after the answers owed, or
        at once if the client does not read them); close a connection idle too long."""
        late = None
        if self.head_deadline is not None and self.head_deadline < now:
            late = HEAD_LATE_PARTS
        elif self.body_deadline is not None and self.body_deadline < now:
            late = BODY_LATE_PARTS
        elif self.idle_since is not None and now - self.idle_since > self.keep_alive_timeout:
            self.transport.close()
        if late is not None:
            if self.writing_paused:
                self.transport.abort()  # the client reads nothing: nothing more to say
            else:
                self._fail(late)

    def _stop_reading(self) -> None:
        """Read no more requests: close the connection after the answers owed."""
        self.stopped = True
        self.closing = True
        self.unread = b""
        self.head_deadline = None
        self._pause_reading()

    def _fail(self, refusal: Answer | None, method: str = "") -> None:
        """Read no more; answer the requests read so far, then ``refusal`` (if any) for
        the one being read, and close."""
        self._stop_reading()
        self.body_deadline = None
        self.pending = None
        self.skip_body = True
        if refusal is not None:
            self._queue((None, b"", refusal, False, method))
        elif not self.busy and not self.line:
            self.transport.close()

    def _arm_head(self) -> None:
        self.head_bytes = 0
        self.head_deadline = self.loop.time() + self.header_timeout

    def _sweep_soon(self) -> None:
        if self.loop not in self.sweepers:
            self.sweepers[self.loop] = self.loop.call_later(self.limits.sweep_period, self._sweep)

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            if isinstance(connection, IngressProtocol):
                connection.check_deadlines(now)
        if self.connections:
            self.sweepers[self.loop] = self.loop.call_later(self.limits.sweep_period, self._sweep)
        else:
            del self.sweepers[self.loop]

    # ------------------------------------------------------------ parser callbacks

    def on_message_begin(self) -> None:
        if self.stopped:
            raise _StoppedError  # a request after the connection's last one: not read
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
        self.framing = 0
        parser = self.parser
        http_version = parser.get_http_version()
        method = parser.get_method().decode("ascii")
        self.keep_alive = http_version != "1.0" and parser.should_keep_alive()
        if http_version != "1.1" and http_version != "1.0":
            if http_version[0] != "1":
                self._refuse_unread(_VERSION, method)
                return
            http_version = "1.1"  # a later 1.x is read as the 1.1 it builds on
        url = self.url
        try:
            form = origin_form if url[:1] == b"/" else absolute_form
            raw_path, query, authority = form(url)
            path = raw_path.decode("ascii")
        except TargetError as exc:
            self._refuse_head(exc.refusal, method)
            return
        except UnicodeDecodeError:
            self._refuse_head(BAD_TARGET, method)
            return
        if "%" in path:
            path = unquote(path)
        scope: dict[str, Any] = {
            "type": "http",
            "http_version": http_version,
            "method": method,
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self.headers,
            "client": self.client,
            "server": self.server,
            "scheme": self.scheme,
            "root_path": "",
        }
        if authority is not None:
            scope["authority"] = authority  # stands for Host (RFC 9112 §3.2.2)
        verdict = self.ingress.start(scope)
        if isinstance(verdict, Pending):
            self.pending = verdict
            if self.expect_continue and not self.busy and not self.line:
                self.transport.write(_CONTINUE)
            return
        self._refuse_head(verdict, method)

    def _refuse_head(self, refusal: Answer, method: str) -> None:
        """Refused by its head. If a body follows, it is not read: answer and close."""
        if self.parser.should_upgrade() or declares_body(self.headers):
            self._refuse_unread(refusal, method)
        else:
            self.skip_body = True
            self._queue((None, b"", refusal, self.keep_alive, method))

    def on_body(self, body: bytes) -> None:
        pending = self.pending
        if self.skip_body or pending is None:
            return
        self.size += len(body)
        if self.size > self.max_body:
            refusal = self.ingress.refuse(pending, BodyTooLargeError(too_large(self.max_body)))
            self._refuse_unread(refusal, pending.method)
            return
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.body_deadline = None
        if not self.keep_alive:
            self._stop_reading()  # its answer is the connection's last (RFC 9112 §9.6)
        pending = self.pending
        if self.skip_body or pending is None:
            return
        self.pending = None
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._queue((pending, body, None, self.keep_alive, pending.method))

    # ------------------------------------------------------------ answering

    def _refuse_unread(self, refusal: Answer, method: str) -> None:
        """Answer ``refusal`` (after the answers owed) without reading the body, and close."""
        self._fail(refusal, method)

    def _queue(self, entry: _Entry) -> None:
        self.line.append(entry)
        if len(self.line) >= MAX_PIPELINED:
            self._pause_reading()
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Answer the requests in line, in order, one at a time; none while the client
        does not read its answers (it would be stored, its answer not read)."""
        while (
            self.line
            and not self.busy
            and not self.writing_paused
            and not self.transport.is_closing()
        ):
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
                self.busy = False
                self.line.clear()
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
        # Closing: the last answer owed ends the connection.
        keep_alive = keep_alive and not (self.closing and not self.line) and _CLOSE not in headers
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
