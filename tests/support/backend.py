"""A real backend on 127.0.0.1 that records every request it receives."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.support.servers import serve_in_thread, wait_for


@dataclass(frozen=True)
class Received:
    """One request as the backend saw it. ``headers`` keep their order, names lower-case."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    at: float  # time.monotonic() when the request arrived

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k == name), None)


# The answer: a status, (status, headers) or (status, headers, body); the body is "ok"
# unless given.
Responder = Callable[
    [Received], "tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes] | int"
]


@dataclass
class RecordingBackend:
    """ASGI backend: records requests, answers with ``responder`` (default 200) after
    ``delay`` seconds, and tracks how many requests it handles at once."""

    responder: Responder = field(default=lambda r: 200)
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Received(
            method=scope["method"],
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            query=scope["query_string"].decode("latin-1"),
            headers=tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]),
            body=body,
            at=time.monotonic(),
        )
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            answer = self.responder(request)
            payload = b"ok"
            if isinstance(answer, tuple) and len(answer) == 3:
                status, headers, payload = answer
            elif isinstance(answer, tuple):
                status, headers = answer[0], answer[1]
            else:
                status, headers = answer, {}
            with self._lock:
                self.received.append(request)
        finally:
            with self._lock:
                self.in_flight -= 1
        raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": payload})

    def wait_for_count(self, count: int, timeout: float = 30.0) -> list[Received]:
        """Block until at least ``count`` requests arrived; return them."""
        wait_for(
            lambda: len(self.received) >= count,
            timeout,
            message=f"backend got {len(self.received)} of {count} requests in {timeout}s",
        )
        with self._lock:
            return list(self.received)


@contextlib.contextmanager
def run_backend(backend: RecordingBackend | None = None) -> Iterator[RecordingBackend]:
    """Serve a RecordingBackend on a free port; ``backend.url`` is its base URL."""
    backend = backend or RecordingBackend()
    with serve_in_thread(backend, lifespan="off") as url:
        backend.url = url
        yield backend
