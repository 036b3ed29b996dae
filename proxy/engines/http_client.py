"""The HTTP/1.1 client deliveries go out on: a keep-alive connection pool per queue.

Chosen by measurement (bench/delivery_clients.py, bench/README.md): a delivery needs one
request and the status, a ``Retry-After`` and a bounded snippet of the answer, and this
client (asyncio protocols and the ``httptools`` parser the ingress uses) does that for
about a quarter of aiohttp's CPU per request and a fortieth of httpx's. What it does:

- ``http`` and ``https`` (the context of :func:`tls_context`: system CA bundle, host name
  checked) targets, HTTP/1.1 only; redirects are never followed (a 3xx is an answer);
- no headers of its own beyond ``Host`` (when the request has none) and
  ``Content-Length`` (when there is a body, or the method carries one); a
  ``Content-Length``, ``Transfer-Encoding`` or ``Connection`` in the request is replaced
  by its own framing, so a stored header can never re-frame the body;
- at most ``connections`` open connections per pool (the queue's ``concurrency``: the
  dispatcher never has more attempts in flight, so an attempt does not wait for one),
  reused while the server keeps them alive, closed after :data:`KEEPALIVE_SECONDS` idle;
- a request on a reused connection that the server closed before answering a byte (its
  idle timeout, at the moment we wrote) goes out once more on a new connection: it was
  not processed, and the attempt should not count as failed for it;
- at most ``limit`` bytes of an answer's body are read (its first :data:`SNIPPET_BYTES`
  kept); a longer body, an answer to ``HEAD``, an answer that ends the connection or a
  cancelled request (the deadline) closes the connection instead of reusing it.

Timeouts are the caller's: cancel the task (:func:`proxy.engines.local.attempt.send`).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from urllib.parse import urlsplit

import httptools

# Below the idle timeout of common servers (uvicorn and Node: 5 s), so the pool rarely
# reuses a connection the backend is closing at that moment.
KEEPALIVE_SECONDS = 4.0
SNIPPET_BYTES = 1024
_OWN_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class ResponseError(ConnectionError):
    """The server's answer could not be read: it closed the connection first, or sent
    something that is not an HTTP/1.1 response. ``answered`` says whether any byte of an
    answer came."""

    def __init__(self, message: str, *, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class Response:
    """An answer: ``status``, its ``Retry-After`` value (``None`` when absent), the first
    :data:`SNIPPET_BYTES` of the body, and the body's bytes read (at most the limit)."""

    __slots__ = ("body_bytes", "retry_after", "snippet", "status")

    def __init__(self) -> None:
        self.status = 0
        self.retry_after: str | None = None
        self.snippet = b""
        self.body_bytes = 0


class _Connection(asyncio.Protocol):
    """One connection; it reads the answer to one request at a time."""

    def __init__(self, pool: ConnectionPool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.answer: asyncio.Future[Response] | None = None
        self.response = Response()
        self.limit = 0
        self.head_only = False  # the request was HEAD: its answer has no body
        self.received = False  # a byte of the current answer came

    # asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.answer is None or self.answer.done():
            self._close()  # bytes nobody asked for: the connection cannot be trusted
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail("the server switched protocols, which a delivery does not do")
        except httptools.HttpParserError as exc:
            self._fail(f"the server's answer is not HTTP/1.1 ({exc})")

    def eof_received(self) -> bool:
        self._ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)

    # httptools callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answer is None:
            self._close()  # an answer nobody asked for: the connection cannot be trusted

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 11 and name.lower() == b"retry-after":
            self.response.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.answer is None:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.response.retry_after = None  # an interim answer (100, 103): the real one follows
            return
        self.response.status = status
        if self.head_only:
            self._finish(reusable=False)  # the parser would wait for a body that never comes

    def on_body(self, body: bytes) -> None:
        if self.answer is None:
            return
        response = self.response
        if len(response.snippet) < SNIPPET_BYTES:
            response.snippet += body[: SNIPPET_BYTES - len(response.snippet)]
        response.body_bytes += len(body)
        if response.body_bytes > self.limit:
            self._finish(reusable=False)  # enough of it: drop the rest with the connection

    def on_message_complete(self) -> None:
        if self.answer is not None and self.response.status:  # not the end of an interim answer
            self._finish(reusable=self.parser.should_keep_alive())

    # the pool's side -------------------------------------------------------------

    def exchange(self, data: bytes, *, head_only: bool, limit: int) -> asyncio.Future[Response]:
        """Write ``data`` (a whole request) and return the future of its answer."""
        assert self.transport is not None
        self.answer = self.pool.loop.create_future()
        self.response = Response()
        self.limit = limit
        self.head_only = head_only
        self.received = False
        self.transport.write(data)
        return self.answer

    def _finish(self, *, reusable: bool) -> None:
        answer, self.answer = self.answer, None
        if answer is None or answer.done():
            return
        if not reusable:
            self._close()
        answer.set_result(self.response)

    def _fail(self, message: str) -> None:
        answer, self.answer = self.answer, None
        self._close()
        if answer is not None and not answer.done():
            answer.set_exception(ResponseError(message, answered=self.received))

    def _ended(self, exc: Exception | None = None) -> None:
        """The server closed the connection (or it broke)."""
        self.closed = True
        self.pool._forget(self)
        if self.answer is None:
            return
        if self.response.status and not self.head_only:
            self._finish(reusable=False)  # a body that ends with the connection
        elif exc is not None and not self.received:
            self._fail(f"{type(exc).__name__}: {exc}")
        else:
            self._fail("the server closed the connection before answering")

    def _close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self.pool._forget(self)


class ConnectionPool:
    """Keep-alive connections to the origins of one queue's target, at most
    ``connections`` (at least one) open at once; ``tls`` is the context for https
    targets (made with :func:`tls_context` when omitted). Make it in the event loop that
    uses it; close it with ``await pool.close()``."""

    def __init__(self, connections: int, tls: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.limit = max(1, connections)
        self.tls = tls
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._sweep: asyncio.TimerHandle | None = None
        self._connecting = 0

    async def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | None,
        *,
        limit: int,
    ) -> Response:
        """Send one request; its answer, with at most ``limit`` bytes of the body read.

        ``headers`` must be sendable (ASCII names and values, no CR or LF: the caller
        checks). ``body`` ``None`` sends no ``Content-Length``. Raises ``ValueError`` for
        a URL this client cannot send to, ``OSError`` (:class:`ResponseError` among
        them) when no answer could be had."""
        origin, target, host = _split(url)
        lines = [f"{method} {target} HTTP/1.1\r\n"]
        has_host = False
        for name, value in headers.items():
            lower = name.lower()
            if lower not in _OWN_FRAMING:
                lines.append(f"{name}: {value}\r\n")
                has_host = has_host or lower == "host"
        if not has_host:
            lines.insert(1, f"Host: {host}\r\n")
        if body is not None:
            lines.append(f"Content-Length: {len(body)}\r\n\r\n")
            data = "".join(lines).encode("latin-1") + body
        else:
            lines.append("\r\n")
            data = "".join(lines).encode("latin-1")
        head_only = method == "HEAD"
        connection, reused = await self._acquire(origin)
        try:
            return await self._exchange(connection, data, head_only, limit)
        except ResponseError as exc:
            if not reused or exc.answered:
                raise
        # The server closed an idle connection as we wrote to it: once more, on a new one.
        connection, _ = await self._acquire(origin, fresh=True)
        return await self._exchange(connection, data, head_only, limit)

    async def _exchange(
        self, connection: _Connection, data: bytes, head_only: bool, limit: int
    ) -> Response:
        try:
            response = await connection.exchange(data, head_only=head_only, limit=limit)
        except BaseException:
            connection._close()  # cancelled (the deadline) or broken: never reused
            raise
        self._release(connection)
        return response

    async def _acquire(
        self, origin: tuple[str, str, int], *, fresh: bool = False
    ) -> tuple[_Connection, bool]:
        while True:
            idle = self._idle.get(origin)
            while idle and not fresh:
                connection = idle.pop()  # the most recently used: the least likely closed
                if not connection.closed:
                    return connection, True
            if len(self._open) + self._connecting < self.limit:
                break
            if self._close_an_idle():
                continue  # an idle connection of another origin made room
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # a connection was released (perhaps ours) or closed
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        scheme, host, port = origin
        tls = None
        if scheme == "https":
            if self.tls is None:
                self.tls = tls_context()
            tls = self.tls
        self._connecting += 1  # holds a place while connecting
        try:
            _, connection = await self.loop.create_connection(
                lambda: _Connection(self, origin),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            )
        finally:
            self._connecting -= 1
        self._open.add(connection)
        return connection, False

    def _release(self, connection: _Connection) -> None:
        if connection.closed:
            return
        connection.idle_since = self.loop.time()
        self._idle.setdefault(connection.origin, []).append(connection)
        if self._waiters:
            self._wake()
        if self._sweep is None:
            self._sweep = self.loop.call_later(KEEPALIVE_SECONDS, self._close_expired)

    def _forget(self, connection: _Connection) -> None:
        """``connection`` is closed: it no longer counts, and its place is free."""
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _close_an_idle(self) -> bool:
        """Close the longest-idle connection (of any origin) to make room; False if none."""
        oldest: _Connection | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        oldest._close()
        return True

    def _close_expired(self) -> None:
        self._sweep = None
        cutoff = self.loop.time() - KEEPALIVE_SECONDS
        left = False
        for idle in list(self._idle.values()):
            for connection in [c for c in idle if c.idle_since <= cutoff]:
                connection._close()
            left = left or bool(idle)
        if left:
            self._sweep = self.loop.call_later(KEEPALIVE_SECONDS, self._close_expired)

    async def close(self) -> None:
        """Close every connection; requests still waiting on one fail."""
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for connection in list(self._open):  # the idle ones among them
            connection._fail("the delivery client closed")  # closes; fails a waiting answer


def _split(url: str) -> tuple[tuple[str, str, int], str, str]:
    """``url`` -> its origin (scheme, host, port), the request target, the Host value."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"not an http or https URL: {url[:100]!r}")
    host = parts.hostname
    if not host:
        raise ValueError(f"a URL without a host: {url[:100]!r}")
    port = parts.port or _DEFAULT_PORTS[scheme]  # raises ValueError for a bad port
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    netloc = parts.netloc.rpartition("@")[2]  # no user information in Host
    return (scheme, host, port), target, netloc


def tls_context() -> ssl.SSLContext:
    """The default client TLS context (system CA bundle, hostname checks), made once per
    engine: each context holds the CA bundle in memory."""
    return ssl.create_default_context()
