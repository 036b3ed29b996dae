"""An asyncio event loop in a thread of its own, for test servers that sync tests, async
tests and a proxy in another thread all reach alike (the fake and the local Cloud Tasks
servers, the lossy gRPC proxy)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

T = TypeVar("T")


class LoopThread:
    """:meth:`start` runs a set-up coroutine on a new loop in a daemon thread and leaves the
    loop serving; :meth:`call` runs a coroutine there; :meth:`stop` runs a tear-down one
    and ends the thread. ``what`` names the server in errors; timeouts are in seconds."""

    def __init__(self, what: str, timeout: float) -> None:
        self.what = what
        self.timeout = timeout
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, setup: Callable[[], Awaitable[Any]]) -> None:
        """Run ``setup()`` on the new loop; raise what it raised, or TimeoutError."""
        started = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                loop.run_until_complete(setup())
            except BaseException as exc:
                errors.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        if not started.wait(self.timeout):
            raise TimeoutError(f"{self.what} did not start in {self.timeout}s")
        if errors:
            self.loop = None
            raise errors[0]

    def call(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run ``coro`` on the loop; return its result."""
        assert self.loop is not None, f"{self.what} is not running"
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        return future.result(self.timeout if timeout is None else timeout)

    def stop(self, teardown: Callable[[], Awaitable[Any]]) -> None:
        """Run ``teardown()`` on the loop, then stop it and end the thread (no-op when not
        running)."""
        loop = self.loop
        if loop is None or self._thread is None:
            return
        self.call(teardown())
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(self.timeout)
        self.loop = None


class GrpcServerThread:
    """A grpc.aio server on a free port of 127.0.0.1 (``host``), on a :class:`LoopThread`.
    Subclasses give :meth:`handler`, which is called on that loop."""

    def __init__(self, what: str, timeout: float) -> None:
        self.host = ""
        self._server: grpc.aio.Server | None = None
        self._runner = LoopThread(what, timeout)

    def handler(self) -> grpc.GenericRpcHandler:
        """The server's methods (on the server's loop)."""
        raise NotImplementedError

    async def _start(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.host = f"127.0.0.1:{port}"

    def start(self) -> None:
        """Serve in a thread of its own; raise what start-up raised."""
        self._runner.start(self._start)

    def stop(self) -> None:
        """Stop serving (calls in flight are cancelled) and end the thread."""
        server = self._server
        if server is not None:
            self._runner.stop(lambda: server.stop(0))
            self._server = None
