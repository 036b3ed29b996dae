"""A delivery process: makes the HTTP requests of the embedded engine's attempts.

    python -m proxy.engines.local.delivery_process FD

The engine starts it with one end of a Unix socket pair as file descriptor ``FD`` and
talks to it in the frames of :mod:`proxy.engines.local.wire`. The engine keeps
everything else: leases, the token buckets and concurrency caps, outcomes, retries,
metrics and the delivery log. This process only sends each request with
:func:`proxy.engines.local.attempt.send` (one connection pool per queue, one deadline
timer per queue) and answers with its outcome, so the HTTP client's CPU is spent on
another core than the ingress's.

It ignores SIGINT and SIGTERM (a Ctrl-C at a terminal reaches the whole process group;
the engine drains first) and exits when the engine closes its end of the socket, or dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from typing import Any, cast

from proxy.engines.delivery import OutgoingRequest
from proxy.engines.http_client import ConnectionPool, tls_context
from proxy.engines.local import attempt, wire
from proxy.logs import configure_logging

logger = logging.getLogger("ingest_proxy.delivery_process")


class _Link(asyncio.Protocol):
    """This process's end of the socket: requests in, outcomes out."""

    def __init__(self) -> None:
        self.reader = wire.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.senders: list[attempt.PoolSender] = []  # one per queue index
        self.attempts: dict[int, asyncio.Task[None]] = {}
        self.loop = asyncio.get_running_loop()  # asking for it costs a system call
        self.closed = self.loop.create_future()
        self.writer = wire.FrameWriter(self.loop)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.writer.transport = self.transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            for message in self.reader.feed(data):
                self._handle(message)
        except ValueError as exc:
            logger.error("the engine sent a broken frame (%s): stopping", exc)
            assert self.transport is not None
            self.transport.close()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == wire.SEND:
            _, ident, queue, method, url, headers, body, deadline, now = message
            request = OutgoingRequest(method, url, headers, body)
            self.attempts[ident] = self.loop.create_task(
                self._attempt(ident, queue, request, deadline, now)
            )
        elif kind == wire.CANCEL:
            task = self.attempts.pop(message[1], None)
            if task is not None:
                task.cancel()
        elif kind == wire.CONFIG:
            _, concurrencies, level, fmt = message
            configure_logging(level, fmt)
            tls = tls_context()
            self.senders = [attempt.PoolSender(ConnectionPool(size, tls)) for size in concurrencies]
            self.writer.put((wire.READY,))

    async def _attempt(
        self, ident: int, queue: int, request: OutgoingRequest, deadline: float, now: float
    ) -> None:
        try:
            outcome = await self.senders[queue].send(request, deadline=deadline, now=now)
        except asyncio.CancelledError:
            return  # the engine gave up on it (shutdown): it expects no answer
        except Exception as exc:  # a bug here must not leave the engine waiting
            logger.exception("delivery attempt failed")
            outcome = attempt.Outcome(None, "error", f"delivery process: {type(exc).__name__}")
        finally:
            self.attempts.pop(ident, None)
        self.writer.put((ident, outcome.status, outcome.kind, outcome.error, outcome.retry_after))

    async def aclose(self) -> None:
        for task in list(self.attempts.values()):
            task.cancel()
        await asyncio.gather(*self.attempts.values(), return_exceptions=True)
        for sender in self.senders:
            await sender.pool.close()


async def serve(fd: int) -> None:
    """Serve the engine on the socket ``fd`` until it closes it."""
    sock = socket.socket(fileno=fd)
    loop = asyncio.get_running_loop()
    _, link = await loop.connect_accepted_socket(_Link, sock)
    await link.closed
    await link.aclose()


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``argv`` is ``[FD]``."""
    args = sys.argv[1:] if argv is None else argv
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    gc.set_threshold(20_000, 20, 20)  # as the server: many short-lived objects per attempt
    runner: Any = asyncio.run
    with contextlib.suppress(ImportError):
        import uvloop

        runner = uvloop.run
    runner(serve(int(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
