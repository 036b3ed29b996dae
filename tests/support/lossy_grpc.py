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

from tests.support.loop_thread import GrpcServerThread

START_TIMEOUT = 10.0


class LossyProxy(GrpcServerThread):
    """Forwards to ``upstream`` (``host:port``); counts the answers it lost."""

    def __init__(self, upstream: str) -> None:
        super().__init__("the lossy gRPC proxy", START_TIMEOUT)
        self.upstream = upstream
        self.losing = False
        self.lost = 0
        self._lock = threading.Lock()

    def handler(self) -> grpc.GenericRpcHandler:
        """Forward every method to ``upstream`` (on the server's loop)."""
        proxy, channel = self, grpc.aio.insecure_channel(self.upstream)

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


@contextlib.contextmanager
def run_lossy_proxy(upstream: str) -> Iterator[LossyProxy]:
    """A started :class:`LossyProxy` to ``upstream``, stopped on exit."""
    proxy = LossyProxy(upstream)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
