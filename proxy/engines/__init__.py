"""Engines persist Envelopes as tasks and deliver them. They know nothing of Starlette.

Both engines implement :class:`Engine`; one contract test suite runs against each.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import BacklogFullError, EngineError, EngineUnavailableError, TaskRejectedError

__all__ = [
    "BacklogFullError",
    "Engine",
    "EngineError",
    "EngineUnavailableError",
    "EnqueueResult",
    "Envelope",
    "TaskRejectedError",
]


class Engine(Protocol):
    """Persist tasks durably; deliver them at the queue's rate with Cloud Tasks semantics."""

    name: str

    async def start(self) -> None:
        """Open connections and files, start delivery. Called once, in the app lifespan."""

    async def aclose(self) -> None:
        """Stop delivery, let attempts in flight finish within the grace period, close."""

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        """Persist ``envelope``; return only once it is durable.

        Raises :class:`EngineUnavailableError` (nothing persisted, retry later),
        :class:`BacklogFullError` (queue at its bound) or :class:`TaskRejectedError`.
        """
        ...

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        """:meth:`enqueue` as a future of its result, on the running loop: the ingress's
        HTTP/1.1 path answers from a callback, without a coroutine per request where the
        engine can avoid one. What is refused before anything is written may raise at once;
        the future carries the rest."""
        ...

    async def check_ready(self) -> None:
        """Raise :class:`EngineUnavailableError` unless the engine can persist right now."""
