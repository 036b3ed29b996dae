"""An in-memory engine that records Envelopes, for testing ingress in isolation.

It implements our own Engine protocol (it replaces no library); behaviour that users rely
on end to end is tested with the real engines elsewhere.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import EngineError


@dataclass
class RecordingEngine:
    """Stores every Envelope; raises ``fail_with`` instead when it is set."""

    name: str = "recording"
    envelopes: list[Envelope] = field(default_factory=list)
    fail_with: EngineError | None = None
    started: bool = False
    closed: bool = False

    async def start(self) -> None:
        self.started = True

    async def aclose(self) -> None:
        self.closed = True

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        if self.fail_with is not None:
            raise self.fail_with
        duplicate = any(e.id == envelope.id and e.queue == envelope.queue for e in self.envelopes)
        if not duplicate:
            self.envelopes.append(envelope)
        return EnqueueResult(envelope.id, envelope.queue, duplicate=duplicate)

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        return asyncio.ensure_future(self.enqueue(envelope))

    async def check_ready(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
