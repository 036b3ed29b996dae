"""The engine's side of a delivery process (:mod:`proxy.engines.local.delivery_process`).

A :class:`DeliveryWorker` starts the process, hands it requests and resolves each
attempt with the outcome the process sends back; :meth:`DeliveryWorker.sender` gives the
:class:`~proxy.engines.local.attempt.Sender` a queue's dispatcher uses. The scheduling
stays in the engine, so rates, caps, retries and metrics are exactly those of an
in-loop delivery; only the HTTP client's work moves to another process (and core).

If the process dies, the attempts it had are failed attempts ("the delivery process
stopped"), retried as any other, and a new process is started (at most one a second).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from typing import cast

from proxy.engines.delivery import OutgoingRequest
from proxy.engines.local import wire
from proxy.engines.local.attempt import Outcome
from proxy.errors import EngineUnavailableError

logger = logging.getLogger("ingest_proxy.local")

RESTART_INTERVAL = 1.0  # seconds between starts of a process that keeps dying
READY_TIMEOUT = 60.0  # seconds a new process has to say it is ready
STOP_TIMEOUT = 5.0  # seconds a process gets to exit after its socket closed
LOST = "the delivery process stopped before answering"


class _Link(asyncio.Protocol):
    """The engine's end of one process's socket."""

    def __init__(self, worker: DeliveryWorker) -> None:
        self.worker = worker
        self.reader = wire.FrameReader()
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()  # READY came, or it died

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            for message in self.reader.feed(data):
                if message == (wire.READY,):
                    if not self.ready.done():
                        self.ready.set_result(None)
                    continue
                ident, status, kind, error, retry_after = message
                self.worker._resolve(ident, Outcome(status, kind, error, retry_after))
        except (ValueError, TypeError) as exc:
            logger.error("the delivery process sent a broken frame (%s): restarting it", exc)
            assert self.transport is not None
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(OSError("the delivery process stopped while starting"))
        self.worker._lost(self)


class DeliveryWorker:
    """One delivery process serving the queues whose connection-pool sizes (their
    ``concurrency``) are ``pools``, in that order; ``log_level``/``log_format`` for the
    process's own (rare) log lines."""

    def __init__(self, pools: list[int], *, log_level: str = "info", log_format: str = "auto"):
        self.pools = pools
        self.log_level = log_level
        self.log_format = log_format
        self._pending: dict[int, asyncio.Future[Outcome]] = {}
        self._next_id = 0
        self._writer: wire.FrameWriter | None = None  # to the current process
        self._link: _Link | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._ready: asyncio.Event | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._last_start = -RESTART_INTERVAL
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the process; raise :class:`EngineUnavailableError` when it cannot run."""
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._writer = wire.FrameWriter(self._loop)
        try:
            await self._spawn()
        except OSError as exc:
            raise EngineUnavailableError(f"Cannot start a delivery process: {exc}") from exc

    async def _spawn(self) -> None:
        assert self._loop is not None
        assert self._ready is not None
        self._last_start = time.monotonic()
        ours = self._start_process()
        _, link = await self._loop.connect_accepted_socket(lambda: _Link(self), ours)
        self._link = link
        assert link.transport is not None
        assert self._writer is not None
        self._writer.transport = link.transport
        self._writer.put((wire.CONFIG, self.pools, self.log_level, self.log_format))
        # No attempt goes out before the process said it is ready: requests queued while
        # it starts would all leave at once when it is, faster than the queue's rate.
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await link.ready
        except TimeoutError:
            link.transport.abort()
            raise OSError(f"the delivery process was not ready within {READY_TIMEOUT:g}s") from None
        self._ready.set()

    def _start_process(self) -> socket.socket:
        """Start the process with one end of a new socket pair; return the other end."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", "proxy.engines.local.delivery_process"]
        try:
            self._process = subprocess.Popen(  # noqa: S603 (our own interpreter and module)
                [*command, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        return ours

    async def aclose(self) -> None:
        """Fail what is still waiting, close the socket, wait for the process to exit."""
        self._closing = True
        if self._restarting is not None:
            self._restarting.cancel()
        link, self._link = self._link, None
        if link is not None and link.transport is not None:
            if self._writer is not None:
                self._writer.flush()  # the cancellations of a drain
            link.transport.close()
        self._fail_pending()
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(_reap, process)

    def _lost(self, link: _Link) -> None:
        if link is not self._link:
            return
        self._link = None
        self._fail_pending()
        if self._closing or not link.ready.done() or link.ready.exception() is not None:
            return  # closing, or still starting: _spawn's caller decides what comes next
        code = self._process.poll() if self._process is not None else None
        logger.warning("the delivery process stopped (exit status %s): starting another", code)
        assert self._ready is not None
        assert self._loop is not None
        self._ready.clear()
        self._restarting = self._loop.create_task(self._restart())

    async def _restart(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            await asyncio.to_thread(_reap, process)
        while not self._closing:
            await asyncio.sleep(max(0.0, self._last_start + RESTART_INTERVAL - time.monotonic()))
            try:
                await self._spawn()
                return
            except OSError as exc:
                logger.error("cannot start a delivery process: %s", exc)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        if self._writer is not None:
            self._writer.clear()
        for future in pending.values():
            if not future.done():
                future.set_result(Outcome(None, "error", LOST))

    # ------------------------------------------------------------ attempts

    def sender(self, queue: int) -> WorkerSender:
        """The sender of the queue at index ``queue`` of ``pools``."""
        return WorkerSender(self, queue)

    async def send(
        self, queue: int, request: OutgoingRequest, *, deadline: float, now: float
    ) -> Outcome:
        """One attempt of ``request`` on the pool of queue index ``queue``; ``deadline`` in
        seconds, ``now`` Unix seconds. Cancelling it cancels the request in the process."""
        while self._link is None or self._ready is None or not self._ready.is_set():
            if self._closing or self._ready is None:  # closed, or never started
                return Outcome(None, "error", "the delivery process is not running")
            await self._ready.wait()  # (re)starting
        self._next_id += 1
        ident = self._next_id
        assert self._loop is not None
        assert self._writer is not None
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._pending[ident] = future
        self._writer.put(
            (wire.SEND, ident, queue, request.method, request.url, request.headers,
             request.body, deadline, now)
        )  # fmt: skip
        try:
            return await future
        except asyncio.CancelledError:
            if self._pending.pop(ident, None) is not None:
                self._writer.put((wire.CANCEL, ident))
            raise

    def _resolve(self, ident: int, outcome: Outcome) -> None:
        future = self._pending.pop(ident, None)
        if future is not None and not future.done():
            future.set_result(outcome)


class WorkerSender:
    """The :class:`~proxy.engines.local.attempt.Sender` of one queue on a delivery process."""

    def __init__(self, worker: DeliveryWorker, queue: int) -> None:
        self.worker = worker
        self.queue = queue

    async def send(self, request: OutgoingRequest, *, deadline: float, now: float) -> Outcome:
        """See :meth:`DeliveryWorker.send`."""
        return await self.worker.send(self.queue, request, deadline=deadline, now=now)


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
