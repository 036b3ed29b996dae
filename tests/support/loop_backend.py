"""A real HTTP backend on 127.0.0.1 that runs on the test's own event loop.

Tests that drive a dispatcher with a manual clock need the backend's answers to come from
the same loop, without threads: a handler sees each request (:class:`Seen`) and returns
a :class:`Reply`, directly or after awaiting (to hang, or to wait on a gate). It is an
aiohttp.web server on a real socket, so the delivery client is exercised as in production.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy


@dataclass(frozen=True)
class Seen:
    """One request as the backend received it; ``headers`` match names case-insensitively."""

    method: str
    url: str  # as the client addressed it, with the backend's host and port
    path_qs: str  # the request target exactly as sent
    headers: CIMultiDictProxy[str]
    content: bytes


@dataclass(frozen=True)
class Reply:
    """What the backend answers."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    drop: bool = False  # close the connection without answering (a transport error)


Handler = Callable[[Seen], "Reply | Awaitable[Reply]"]


@dataclass
class LoopBackend:
    """The running backend: ``url`` is its base URL; ``handler`` may be replaced at any time."""

    handler: Handler
    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(
            method=request.method,
            url=f"{self.url}{request.raw_path}",
            path_qs=request.raw_path,
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            content=await request.read(),
        )
        self.seen.append(seen)
        answer = self.handler(seen)
        reply = await answer if inspect.isawaitable(answer) else answer
        if reply.drop and request.transport is not None:
            request.transport.abort()
        return web.Response(status=reply.status, headers=reply.headers, body=reply.body)


@asynccontextmanager
async def loop_backend(handler: Handler = lambda seen: Reply()) -> AsyncIterator[LoopBackend]:
    """Serve ``handler`` on a free port of 127.0.0.1 until the block ends."""
    backend = LoopBackend(handler)
    server = web.Server(backend._handle)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    backend.url = f"http://127.0.0.1:{port}"
    try:
        yield backend
    finally:
        await runner.cleanup()
