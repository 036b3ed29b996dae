"""LocalEngine as a whole: lifecycle, backlog accounting, the read API (engine.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.local.clock import ManualClock
from proxy.engines.local.engine import LocalEngine
from proxy.engines.local.store.store import Store
from proxy.envelope import Envelope
from proxy.errors import BacklogFullError, EngineUnavailableError, TaskRejectedError
from proxy.metrics import Metrics
from tests.support.loop_backend import Handler, LoopBackend, Reply, Seen, loop_backend

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend() -> AsyncIterator[LoopBackend]:
    """A real backend on the test's loop (200 unless a test sets its handler)."""
    async with loop_backend() as served:
        yield served


def settings(
    tmp_path: Path, target: str = "http://127.0.0.1:9", processes: int = 1, **queue: object
) -> Settings:
    return settings_from_dict(
        {
            "queues": [{"name": "q", "target": target, **queue}],
            "local": {"db": str(tmp_path / "e.db"), "delivery_processes": processes},
            "server": {"shutdown_grace": 0.2},
        }
    )


def envelope(n: int, queue: str = "q") -> Envelope:
    return Envelope(
        id=f"t{n}", queue=queue, method="POST", path="/", query="", headers=(),
        body=b"body", received_at=1.0, request_id="r",
    )  # fmt: skip


def engine(
    tmp_path: Path,
    backend: LoopBackend | None = None,
    handler: Handler | None = None,
    **queue: object,
) -> LocalEngine:
    """An engine whose queue ``q`` delivers to ``backend`` (answering with ``handler``), or
    to a closed port without one."""
    if backend is not None and handler is not None:
        backend.handler = handler
    target = backend.url if backend is not None else "http://127.0.0.1:9"
    return LocalEngine(settings(tmp_path, target, **queue), Metrics())


async def test_second_process_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """Two engines on one database would deliver twice: the second one cannot start."""
    first = engine(tmp_path)
    await first.start()
    try:
        with pytest.raises(EngineUnavailableError, match="in use"):
            await engine(tmp_path).start()
    finally:
        await first.aclose()
    again = engine(tmp_path)
    await again.start()
    await again.aclose()


async def test_unknown_queue_and_closed_engine(tmp_path: Path) -> None:
    """An Envelope for a queue that does not exist is rejected; after aclose, 503."""
    running = engine(tmp_path)
    await running.start()
    with pytest.raises(TaskRejectedError) as rejected:
        await running.enqueue(envelope(1, queue="nope"))
    assert rejected.value.status == 404
    await running.aclose()
    with pytest.raises(EngineUnavailableError):
        await running.enqueue(envelope(2))


async def test_shutdown_cancels_attempts_still_running(
    tmp_path: Path, backend: LoopBackend
) -> None:
    """Attempts that outlast the grace period are cancelled; their leases were never
    written, so the task is due again at once after a restart."""

    async def hang(request: Seen) -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    running = engine(tmp_path, backend, hang)
    await running.start()
    await running.enqueue(envelope(1))
    for _ in range(500):
        if any(d.in_flight for d in running.dispatchers.values()):
            break
        await asyncio.sleep(0.01)
    await running.aclose()
    store = Store(str(tmp_path / "e.db"), clock=lambda: 0.0)
    counts, released_at_open = store.open(["q"])
    try:
        assert counts["q"].tasks == 1
        assert released_at_open == 0  # nothing was leased in the file
        lease = await store.lease("q", now=10.0, limit=5)
        assert [t.envelope.id for t in lease.tasks] == ["t1"]
    finally:
        store.close()


async def test_backlog_bound_in_bytes(tmp_path: Path, backend: LoopBackend) -> None:
    """max_backlog_bytes refuses a task whose body would pass the bound, with a Retry-After."""
    never = engine(tmp_path, backend, lambda r: Reply(500), max_backlog_bytes=10, rate=1)
    await never.start()
    try:
        await never.enqueue(envelope(1))
        await never.enqueue(envelope(2))  # 8 of 10 bytes
        with pytest.raises(BacklogFullError) as full:
            await never.enqueue(envelope(3))
        assert full.value.retry_after is not None
        assert full.value.retry_after >= 1
        assert never.backlogs["q"].tasks == 2
    finally:
        await never.aclose()


def test_default_bound_when_none_is_set(tmp_path: Path) -> None:
    """Without max_backlog_tasks or _bytes a queue holds at most 1,000,000 tasks / 1 GiB;
    with only one of them set, only that one applies."""
    default = engine(tmp_path).backlogs["q"]
    assert (default.max_tasks, default.max_bytes) == (1_000_000, 1024**3)
    only_tasks = engine(tmp_path, max_backlog_tasks=5).backlogs["q"]
    assert (only_tasks.max_tasks, only_tasks.max_bytes) == (5, float("inf"))


@pytest.mark.parametrize("processes", [0, 1, 2])
async def test_deliveries_from_the_loop_or_from_delivery_processes(
    tmp_path: Path, backend: LoopBackend, processes: int
) -> None:
    """With local.delivery_processes = 0 the engine delivers from its own loop and starts
    no process; with N it starts N processes (no more than there are queues) that deliver
    and are gone after aclose()."""
    config = settings(tmp_path, backend.url, processes)
    running = LocalEngine(config, Metrics())
    await running.start()
    processes_started = [worker._process for worker in running._workers]
    try:
        assert len(processes_started) == min(processes, 1)  # one queue
        for n in range(3):
            await running.enqueue(envelope(n))
        for _ in range(1000):
            if len(backend.seen) == 3 and running.backlogs["q"].tasks == 0:
                break
            await asyncio.sleep(0.01)
        assert sorted(s.headers["x-cloudtasks-taskname"] for s in backend.seen) == [
            "t0", "t1", "t2"
        ]  # fmt: skip
        assert running.backlogs["q"].tasks == 0
    finally:
        await running.aclose()
    for process in processes_started:
        assert process is not None
        assert process.poll() is not None  # exited and reaped


async def test_gauges_count_lateness_from_the_schedule_time(tmp_path: Path) -> None:
    """A task delayed by 2 h is scheduled, in the depth, and not late; 4 h later (the queue
    paused, so it stays) it is due and 2 h overdue. The gauges are read as a scrape does."""
    clock = ManualClock(start=1_700_000_000.0)
    metrics = Metrics()
    running = LocalEngine(settings(tmp_path, processes=0), metrics, clock=clock)
    await running.start()

    def gauges() -> tuple[float | None, ...]:
        names = ("queue_depth", "scheduled_tasks", "oldest_task_age_seconds")
        return tuple(
            metrics.registry.get_sample_value(f"ingest_proxy_{name}", {"queue": "q"})
            for name in names
        )

    try:
        await running.pause_queue("q")
        now = clock.time()
        delayed = Envelope(
            id="later", queue="q", method="POST", path="/", query="", headers=(), body=b"",
            received_at=now, schedule_time=now + 7200, request_id="r",
        )  # fmt: skip
        await running.enqueue(delayed)
        clock.advance(3600)
        assert gauges() == (1.0, 1.0, 0.0)
        clock.advance(3 * 3600)
        assert gauges() == (1.0, 0.0, 7200.0)
    finally:
        await running.aclose()
