"""The Cloud Tasks engine with a spool, against the real gRPC fake of
tests/support/fake_cloudtasks.py (outages, lost answers) and real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import grpc
import pytest

from proxy.engines.cloudtasks.engine import CloudTasksEngine
from proxy.errors import ConfigError, EngineUnavailableError
from proxy.metrics import Metrics
from tests.engines.cloudtasks.test_engine import QUEUE_PATH, envelope, make_settings
from tests.support.fake_cloudtasks import FakeCloudTasks

pytestmark = pytest.mark.anyio
TIMEOUT = 30.0  # seconds for any one wait


def spool_settings(host: str, path: Path, **spool: Any) -> Any:
    spool.setdefault("spool_breaker_open", "0.5s")
    return make_settings(host, spool=str(path), enqueue_deadline="0.3s", **spool)


@pytest.fixture
async def started(
    fake_cloudtasks: FakeCloudTasks, tmp_path: Path
) -> AsyncIterator[tuple[CloudTasksEngine, Metrics]]:
    metrics = Metrics()
    engine = CloudTasksEngine(spool_settings(fake_cloudtasks.host, tmp_path / "s.db"), metrics)
    await engine.start()
    try:
        yield engine, metrics
    finally:
        await engine.aclose()


async def until(predicate: Any) -> None:
    with anyio.fail_after(TIMEOUT):
        while not predicate():  # noqa: ASYNC110 - the fake runs in a thread
            await anyio.sleep(0.02)


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


async def test_an_outage_spools_with_the_same_name_and_the_forwarder_creates_it(
    started: tuple[CloudTasksEngine, Metrics], fake_cloudtasks: FakeCloudTasks
) -> None:
    """CreateTask failing past the deadline: a 202 result; once Cloud Tasks answers, the
    task is created under the name it would have had, and the spool is empty."""
    engine, metrics = started
    assert engine.spool is not None
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    result = await engine.enqueue(envelope(id="down1"))
    assert (result.task_id, result.duplicate) == ("down1", False)
    assert engine.spool.depth() == 1
    assert fake_cloudtasks.tasks == {}
    assert sample(metrics, "ingest_proxy_spooled_total", {"reason": "deadline"}) == 1
    assert sample(metrics, "ingest_proxy_spool_tasks") == 1
    fake_cloudtasks.outage(None)
    await until(lambda: engine.spool is not None and engine.spool.depth() == 0)
    assert list(fake_cloudtasks.tasks) == [f"{QUEUE_PATH}/tasks/down1"]
    labels = {"outcome": "created"}
    assert sample(metrics, "ingest_proxy_spool_forwarded_total", labels) == 1
    assert sample(metrics, "ingest_proxy_spool_tasks") == 0


async def test_a_lost_answer_meets_already_exists_and_makes_one_task(
    started: tuple[CloudTasksEngine, Metrics], fake_cloudtasks: FakeCloudTasks
) -> None:
    """Cloud Tasks stored the task but every answer was lost: the spooled copy meets
    ALREADY_EXISTS, counts as done, and there is one task."""
    engine, metrics = started
    assert engine.spool is not None
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE, after_store=True)
    await engine.enqueue(envelope(id="landed"))
    assert engine.spool.depth() == 1
    fake_cloudtasks.outage(None)
    await until(lambda: engine.spool is not None and engine.spool.depth() == 0)
    assert list(fake_cloudtasks.tasks) == [f"{QUEUE_PATH}/tasks/landed"]
    labels = {"outcome": "already_existed"}
    assert sample(metrics, "ingest_proxy_spool_forwarded_total", labels) == 1


async def test_a_repeated_idempotency_key_in_the_spool_is_a_duplicate(
    started: tuple[CloudTasksEngine, Metrics], fake_cloudtasks: FakeCloudTasks
) -> None:
    """The same key while its first copy is spooled: the same name, duplicate, one
    entry, even once Cloud Tasks answers again (the spool is asked first)."""
    engine, _ = started
    assert engine.spool is not None
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    keyed = envelope(id="k-hash", idempotency_key="order-1")
    first = await engine.enqueue(keyed)
    again = await engine.enqueue(keyed)
    assert (first.task_id, first.duplicate) == ("k-hash", False)
    assert (again.task_id, again.duplicate) == ("k-hash", True)
    assert engine.spool.depth() == 1
    calls = fake_cloudtasks.create_calls
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)  # still down; breaker is open
    await until(lambda: engine.spool is not None and engine.spool.breaker.state != "closed")
    fake_cloudtasks.outage(None)
    await until(lambda: engine.spool is not None and engine.spool.depth() == 0)
    assert fake_cloudtasks.create_calls > calls
    assert list(fake_cloudtasks.tasks) == [f"{QUEUE_PATH}/tasks/k-hash"]


async def test_an_open_breaker_spools_without_calling_cloud_tasks(
    fake_cloudtasks: FakeCloudTasks, tmp_path: Path
) -> None:
    """After N failed CreateTasks in a row the breaker opens: the next requests are
    spooled at once, without a CreateTask; the forwarder's probe closes it again."""
    metrics = Metrics()
    settings = spool_settings(
        fake_cloudtasks.host,
        tmp_path / "s.db",
        spool_breaker_failures=2,
        spool_breaker_open="60s",
    )
    engine = CloudTasksEngine(settings, metrics)
    await engine.start()
    try:
        assert engine.spool is not None
        fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
        await engine.enqueue(envelope(id="opens"))
        assert engine.spool.breaker.state == "open"
        assert sample(metrics, "ingest_proxy_spool_breaker_state") == 2
        calls = fake_cloudtasks.create_calls
        results = [await engine.enqueue(envelope(id=f"fast{n}")) for n in range(5)]
        assert [r.task_id for r in results] == [f"fast{n}" for n in range(5)]
        assert fake_cloudtasks.create_calls == calls
        assert engine.spool.depth() == 6
        labels = {"reason": "breaker"}
        assert sample(metrics, "ingest_proxy_spooled_total", labels) == 5
    finally:
        await engine.aclose()


async def test_a_full_spool_answers_503_and_keeps_nothing(
    fake_cloudtasks: FakeCloudTasks, tmp_path: Path
) -> None:
    """Past spool_max_tasks: EngineUnavailableError with a Retry-After, nothing kept;
    and past spool_max_bytes the same."""
    settings = spool_settings(fake_cloudtasks.host, tmp_path / "s.db", spool_max_tasks=2)
    engine = CloudTasksEngine(settings, Metrics())
    await engine.start()
    try:
        assert engine.spool is not None
        fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
        await engine.enqueue(envelope(id="one"))
        await engine.enqueue(envelope(id="two"))
        with pytest.raises(EngineUnavailableError, match="spool is full") as refused:
            await engine.enqueue(envelope(id="three"))
        assert refused.value.retry_after is not None
        assert refused.value.retry_after >= 1
        assert engine.spool.depth() == 2
        assert not engine.spool.accepting()
    finally:
        await engine.aclose()
    settings = spool_settings(fake_cloudtasks.host, tmp_path / "b.db", spool_max_bytes=2048)
    engine = CloudTasksEngine(settings, Metrics())
    await engine.start()
    try:
        assert engine.spool is not None
        with pytest.raises(EngineUnavailableError, match="spool is full"):
            await engine.enqueue(envelope(id="big", body=b"x" * 4096))
        assert engine.spool.depth() == 0
    finally:
        await engine.aclose()


async def test_a_full_disk_answers_503_and_readiness_follows(
    started: tuple[CloudTasksEngine, Metrics], fake_cloudtasks: FakeCloudTasks
) -> None:
    """SQLITE_FULL on the spool (max_page_count): 503, nothing kept, and /readyz's check
    fails while Cloud Tasks is down too; it passed before the disk filled."""
    engine, _ = started
    spool = engine.spool
    assert spool is not None
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    await engine.enqueue(envelope(id="fits"))
    await asyncio.sleep(1.6)  # past the readiness cache
    await engine.check_ready()  # Cloud Tasks is down, but the spool takes requests

    def cap(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")

    await spool._file.writer.submit(cap)
    with pytest.raises(EngineUnavailableError, match="full"):
        await engine.enqueue(envelope(id="lost", body=b"x" * 60_000))
    assert spool.depth() == 1
    with pytest.raises(EngineUnavailableError):
        await engine.check_ready()


async def test_spooled_entries_survive_a_restart(
    fake_cloudtasks: FakeCloudTasks, tmp_path: Path
) -> None:
    """Entries left in the file by a stopped engine are forwarded by the next one."""
    settings = spool_settings(fake_cloudtasks.host, tmp_path / "s.db")
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    engine = CloudTasksEngine(settings, Metrics())
    await engine.start()
    try:
        for n in range(3):
            await engine.enqueue(envelope(id=f"kept{n}"))
    finally:
        await engine.aclose()
    assert fake_cloudtasks.tasks == {}
    fake_cloudtasks.outage(None)
    again = CloudTasksEngine(settings, Metrics())
    await again.start()
    try:
        assert again.spool is not None
        await until(lambda: len(fake_cloudtasks.tasks) == 3)
        await until(lambda: again.spool is not None and again.spool.depth() == 0)
    finally:
        await again.aclose()
    names = [r.task.name.rsplit("/", 1)[1] for r in fake_cloudtasks.requests]
    forwarded = [n for n in names if n.startswith("kept")]
    assert forwarded[-3:] == ["kept0", "kept1", "kept2"]  # arrival order


async def test_nothing_changes_while_cloud_tasks_answers(
    started: tuple[CloudTasksEngine, Metrics], fake_cloudtasks: FakeCloudTasks
) -> None:
    """With Cloud Tasks up, the task goes straight there and the spool stays empty."""
    engine, metrics = started
    assert engine.spool is not None
    await engine.enqueue(envelope(id="direct"))
    assert list(fake_cloudtasks.tasks) == [f"{QUEUE_PATH}/tasks/direct"]
    assert engine.spool.depth() == 0
    assert sample(metrics, "ingest_proxy_spooled_total", {"reason": "deadline"}) == 0


def test_spool_settings_are_checked(tmp_path: Path) -> None:
    """Bad spool values name their key."""
    for key, value in [
        ("spool_max_tasks", 0),
        ("spool_forward_rate", 0),
        ("spool_breaker_failures", 0),
        ("spool_breaker_open", "0s"),
        ("spool", " "),
    ]:
        with pytest.raises(ConfigError, match=f"cloudtasks.{key}"):
            make_settings("127.0.0.1:1", **{key: value})
    settings = make_settings("127.0.0.1:1", spool=str(tmp_path / "s.db"), spool_breaker_open="2m")
    assert settings.cloudtasks.spool_breaker_open == 120.0
