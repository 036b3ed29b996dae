"""The forwarder's backoff (an injected jitter) and what it does with an entry Cloud
Tasks refuses, against the gRPC fake and a real spool file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import grpc
import pytest

from proxy.engines.cloudtasks.breaker import Breaker
from proxy.engines.cloudtasks.engine import CloudTasksEngine
from proxy.engines.cloudtasks.forwarder import BACKOFF_MAX, BACKOFF_MIN, Forwarder
from proxy.metrics import Metrics
from tests.engines.cloudtasks.test_engine import QUEUE_PATH, envelope, make_settings
from tests.support.fake_cloudtasks import FakeCloudTasks

pytestmark = pytest.mark.anyio


class NoSpool:
    async def next_entries(self, limit: int, after: int) -> list[object]:
        return []


def forwarder(jitter: float) -> Forwarder:
    breaker = Breaker(failures=5, open_for=1.0)
    return Forwarder(NoSpool(), None, {}, breaker, rate=50, jitter=lambda: jitter)  # type: ignore[arg-type]


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    """Each failure in a row doubles the pause, up to BACKOFF_MAX; the jitter keeps it
    between half of that and all of it."""
    low, high = forwarder(0.0), forwarder(0.999999)
    lows = [low._backoff() for _ in range(10)]
    highs = [high._backoff() for _ in range(10)]
    assert lows[:3] == [BACKOFF_MIN / 2, BACKOFF_MIN, BACKOFF_MIN * 2]
    assert lows[-1] == BACKOFF_MAX / 2
    assert highs[0] == pytest.approx(BACKOFF_MIN)
    assert highs[-1] == pytest.approx(BACKOFF_MAX)


@pytest.fixture
async def engine(
    fake_cloudtasks: FakeCloudTasks, tmp_path: Path
) -> AsyncIterator[CloudTasksEngine]:
    settings = make_settings(
        fake_cloudtasks.host,
        spool=str(tmp_path / "s.db"),
        enqueue_deadline="0.3s",
        spool_breaker_open="0.5s",
    )
    started = CloudTasksEngine(settings, Metrics())
    await started.start()
    try:
        yield started
    finally:
        await started.aclose()


async def test_an_invalid_entry_stays_with_its_error_and_the_rest_go_on(
    engine: CloudTasksEngine, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Cloud Tasks refuses the first spooled entry as invalid: it stays in the spool with
    the error (never removed without Cloud Tasks taking it); the next one is created."""
    spool = engine.spool
    assert spool is not None
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    await engine.enqueue(envelope(id="bad"))
    await engine.enqueue(envelope(id="good"))
    fake_cloudtasks.fail_next(1, grpc.StatusCode.INVALID_ARGUMENT, "Task too large")
    fake_cloudtasks.outage(None)
    with anyio.fail_after(30):
        while f"{QUEUE_PATH}/tasks/good" not in fake_cloudtasks.tasks:  # noqa: ASYNC110
            await anyio.sleep(0.02)
        while spool.depth() != 1:  # noqa: ASYNC110 - the fake runs in a thread
            await anyio.sleep(0.02)
    page = await spool.list_entries(limit=10, cursor=None)
    [left] = page.items
    assert left.name == f"{QUEUE_PATH}/tasks/bad"
    assert left.last_error is not None
    assert "INVALID_ARGUMENT" in left.last_error
    assert f"{QUEUE_PATH}/tasks/bad" not in fake_cloudtasks.tasks
