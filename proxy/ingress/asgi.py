"""The ingress as a plain ASGI app, for any ASGI server: the pipeline's two steps with the
body read from ASGI ``receive`` messages. ``ingest-proxy serve`` does not use it (its
HTTP/1.1 protocol calls the steps itself); tests and embedders do."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from proxy.errors import BadRequestError, BodyTooLargeError, ProxyError
from proxy.http.responses import Answer
from proxy.ingress.head import Scope, declares_body
from proxy.ingress.pipeline import Ingress, Pending, too_large

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AsgiIngress:
    """ASGI app over ``pipeline``: HTTP requests only (other scopes are ignored)."""

    def __init__(self, pipeline: Ingress) -> None:
        self.pipeline = pipeline

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        verdict = self.pipeline.start(scope)
        if isinstance(verdict, Pending):
            status, headers, payload = await self._store(verdict, receive)
        else:
            status, headers, payload = verdict
            if declares_body(scope["headers"]):
                # Refused before its body was read (too large, bad headers): close the
                # connection rather than read on, or a client dripping the rest of the
                # body would hold it open with no deadline.
                headers = [*headers, (b"connection", b"close")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _store(self, pending: Pending, receive: Receive) -> Answer:
        try:
            body = await _read_body(receive, self.pipeline.max_body)
        except ProxyError as exc:
            status, headers, payload = self.pipeline.refuse(pending, exc)
            return status, [*headers, (b"connection", b"close")], payload
        answered: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

        def respond(status: int, headers: list[tuple[bytes, bytes]], payload: bytes) -> None:
            if not answered.done():
                answered.set_result((status, headers, payload))

        self.pipeline.finish(pending, body, respond)
        return await answered


async def _read_body(receive: Receive, limit: int) -> bytes:
    """The request body from ``receive``, at most ``limit`` bytes (else 413). The body
    deadline (``limits.body_timeout``) is the HTTP server's: a late body reaches us as a
    disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequestError(
                "The client disconnected before the body was complete.", code="disconnected"
            )
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError(too_large(limit))
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
