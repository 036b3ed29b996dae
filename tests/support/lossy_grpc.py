"""A gRPC proxy that loses answers: it forwards every call (any method, raw bytes) to an
upstream server and, while ``losing`` is set, throws the real answer away and aborts with
UNAVAILABLE, as a network that cut the connection after the server committed would.

It runs in a thread with its own event loop on a free port of 127.0.0.1 (``host``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import grpc

from tests.support.loop_thread import LoopThread

START_TIMEOUT = 10.0


class LossyProxy:
    """Forwards to ``upstream`` (``host:port``); counts the answers it lost."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.host = ""
        self.losing = False
        self.lost = 0
        self._lock = threading.Lock()
        self._server: grpc.aio.Server | None = None
        self._runner = LoopThread("the lossy gRPC proxy", START_TIMEOUT)

    def _handler(self, channel: grpc.aio.Channel) -> grpc.GenericRpcHandler:
        proxy = self

        class Forward(grpc.GenericRpcHandler):
            def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
                method: str = details.method  # type: ignore[attr-defined]
                call = channel.unary_unary(method)

                async def forward(request: bytes, context: Any) -> bytes:
                    metadata = tuple(context.invocation_metadata() or ())
                    try:
                        answer: bytes = await call(request, metadata=metadata, timeout=30)
                        error: grpc.aio.AioRpcError | None = None
                    except grpc.aio.AioRpcError as exc:
                        answer, error = b"", exc
                    if proxy.losing:
                        with proxy._lock:
                            proxy.lost += 1
                        await context.abort(grpc.StatusCode.UNAVAILABLE, "answer lost")
                    if error is not None:
                        await context.abort(error.code(), error.details() or "")
                    return answer

                return grpc.unary_unary_rpc_method_handler(forward)

        return Forward()

    async def _start(self) -> None:
        channel = grpc.aio.insecure_channel(self.upstream)
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((self._handler(channel),))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        self.host = f"127.0.0.1:{port}"

    def start(self) -> None:
        """Serve in a thread of its own."""
        self._runner.start(self._start)

    def stop(self) -> None:
        """Stop serving and end the thread."""
        server = self._server
        if server is not None:
            self._runner.stop(lambda: server.stop(0))
            self._server = None


@contextlib.contextmanager
def run_lossy_proxy(upstream: str) -> Iterator[LossyProxy]:
    """A started :class:`LossyProxy` to ``upstream``, stopped on exit."""
    proxy = LossyProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
