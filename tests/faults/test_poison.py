"""A task the HTTP client cannot send at all (a poison task) must still count its attempts
and end in the dead-letter table, not cycle unseen forever.

The ingress now refuses such requests (non-ASCII header values get 400 invalid_header,
see tests/security), so this reaches the engine directly, as a database written by an
older version or a future ingress bug would: the embedded engine on a real SQLite file
and a real backend, with max_attempts = 1.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.engines.local.engine import LocalEngine
from proxy.envelope import Envelope
from proxy.metrics import Metrics
from tests.support.backend import RecordingBackend
from tests.support.spike import local_settings

WAIT = 10.0  # seconds: a first attempt at rate 50 starts within milliseconds


def test_unsendable_task_is_dead_lettered_after_max_attempts(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """A stored task whose request httpx refuses to build (a non-ASCII header value) is a
    failed attempt like any other: with max_attempts = 1 it is dead-lettered at once,
    leaves the queue, and the well-formed task next to it is delivered."""
    settings = local_settings(
        tmp_path, backend.url, rate=50, dispatch_deadline="15s", retry={"max_attempts": 1}
    )
    now = time.time()
    poison = Envelope(
        id="poison", queue="q", method="POST", path="/p", query="",
        headers=(("x-name", "caf\u00e9"),), body=b"poison", received_at=now,
    )  # fmt: skip
    fine = Envelope(
        id="fine", queue="q", method="POST", path="/p", query="",
        headers=(), body=b"fine", received_at=now,
    )  # fmt: skip

    async def run() -> tuple[list[str], int]:
        engine = LocalEngine(settings, Metrics())
        await engine.start()
        try:
            await engine.enqueue(poison)
            await engine.enqueue(fine)
            for _ in range(int(WAIT / 0.05)):  # bounded wait for both outcomes
                if engine.store.dead_letters("q") and backend.received:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # the delivered task's completion is recorded meanwhile
            dead = [d.id for d in engine.store.dead_letters("q")]
            return dead, engine.backlogs["q"].tasks
        finally:
            await engine.aclose()

    dead, left = asyncio.run(run())
    assert [r.body for r in backend.received] == [b"fine"]
    assert dead == ["poison"], "the unsendable task never reached the dead-letter table"
    assert left == 0
