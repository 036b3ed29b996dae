"""One contract for every engine: what the ingress (and so a client) may rely on.

Parametrised over the embedded engine (SQLite file in tmp_path) and the Cloud Tasks
engine, against the real gcloud-tasks-emulator (``cloudtasks``) and against our own
``ingest-proxy cloudtasks-server`` (``ctserver``), each delivering to a real recording
backend on 127.0.0.1. Idempotency de-dup for Cloud Tasks runs against the fake gRPC server
and against cloudtasks-server, since the emulator does not de-duplicate task names (Cloud
Tasks does).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines import Engine
from proxy.engines.cloudtasks.engine import CloudTasksEngine
from proxy.envelope import Envelope
from proxy.errors import EngineUnavailableError
from proxy.metrics import Metrics
from tests.support.backend import Received, RecordingBackend
from tests.support.cloudtasks_server import ServerThread, run_server, sync_client
from tests.support.emulator import (
    LOCATION,
    PROJECT,
    Emulator,
    cloudtasks_proxy_settings,
    queue_path,
    unique_queue_name,
)
from tests.support.fake_cloudtasks import FakeCloudTasks

pytestmark = pytest.mark.anyio

TIMEOUT = 30.0  # seconds for any one wait


@dataclass
class Harness:
    """How to build one engine kind for a queue delivering to ``backend``."""

    kind: str
    queue: str
    settings: Settings
    queue_header: str  # the X-CloudTasks-QueueName the backend sees
    make: Callable[[Settings], Engine]

    @contextlib.asynccontextmanager
    async def engine(self) -> AsyncIterator[Engine]:
        """A started engine, closed on exit."""
        engine = self.make(self.settings)
        await engine.start()
        try:
            yield engine
        finally:
            await engine.aclose()


def local_harness(backend: RecordingBackend, tmp_path: Path) -> Harness:
    from proxy.engines.local.engine import LocalEngine

    queue = "contract"
    settings = settings_from_dict(
        {
            "engine": "local",
            "queues": [{"name": queue, "target": backend.url}],
            "local": {"db": str(tmp_path / "tasks.db")},
            "server": {"shutdown_grace": 5},
        }
    )
    return Harness("local", queue, settings, queue, lambda s: LocalEngine(s, Metrics()))


def cloudtasks_harness(backend: RecordingBackend, emulator: Emulator) -> Harness:
    queue = unique_queue_name("contract")
    emulator.create_queue(queue)
    settings = cloudtasks_proxy_settings(queue=queue, target=backend.url, host=emulator.host)
    # The emulator sends the full queue path where Cloud Tasks sends the short id.
    return Harness(
        "cloudtasks", queue, settings, queue_path(queue), lambda s: CloudTasksEngine(s, Metrics())
    )


def ctserver_harness(backend: RecordingBackend, server: ServerThread) -> Harness:
    """The Cloud Tasks engine against cloudtasks-server, which sends the short queue id."""
    queue = unique_queue_name("contract")
    client, channel = sync_client(server.host)
    try:
        client.create_queue(parent=f"projects/{PROJECT}/locations/{LOCATION}",
                            queue={"name": queue_path(queue)})  # fmt: skip
    finally:
        channel.close()
    settings = cloudtasks_proxy_settings(queue=queue, target=backend.url, host=server.host)
    return Harness("ctserver", queue, settings, queue, lambda s: CloudTasksEngine(s, Metrics()))


@pytest.fixture
def ctserver(tmp_path: Path) -> Iterator[ServerThread]:
    """Our cloudtasks-server on a free port of 127.0.0.1, its file in tmp_path."""
    with run_server(tmp_path / "ctserver.db") as server:
        yield server


@pytest.fixture(params=["local", "cloudtasks", "ctserver"])
def harness(request: pytest.FixtureRequest, backend: RecordingBackend, tmp_path: Path) -> Harness:
    """Each engine kind in turn, set up to deliver to ``backend``."""
    if request.param == "local":
        return local_harness(backend, tmp_path)
    if request.param == "ctserver":
        return ctserver_harness(backend, request.getfixturevalue("ctserver"))
    return cloudtasks_harness(backend, request.getfixturevalue("emulator"))


def envelope(queue: str, **fields: Any) -> Envelope:
    values: dict[str, Any] = {
        "id": unique_queue_name("task"),
        "queue": queue,
        "method": "POST",
        "path": "/orders/7",
        "query": "x=1&y=two",
        "headers": (("content-type", "application/json"), ("x-custom", "hello")),
        "body": b'{"n": 7}',
        "received_at": time.time(),
        "request_id": "req-1",
    }
    values.update(fields)
    return Envelope(**values)


async def received(backend: RecordingBackend, count: int) -> list[Received]:
    """Wait without blocking the loop (the local engine delivers from it) for ``count``."""
    with anyio.fail_after(TIMEOUT):
        while len(backend.received) < count:  # noqa: ASYNC110 - the backend runs in a thread
            await anyio.sleep(0.02)
    return list(backend.received)


# ---------------------------------------------------------------- the contract


async def test_enqueued_task_is_durable_and_delivered_unchanged(
    harness: Harness, backend: RecordingBackend
) -> None:
    """A returned enqueue survives closing the engine and is delivered unchanged."""
    sent = envelope(harness.queue)
    async with harness.engine() as engine:
        result = await engine.enqueue(sent)
    assert (result.task_id, result.queue, result.duplicate) == (sent.id, harness.queue, False)
    async with harness.engine():  # a restarted proxy: the task is still there
        [first, *_] = await received(backend, 1)
    assert first.method == "POST"
    assert first.path == "/orders/7"
    assert first.query == "x=1&y=two"
    assert first.body == b'{"n": 7}'
    assert first.header("content-type") == "application/json"
    assert first.header("x-custom") == "hello"
    assert first.header("x-cloudtasks-taskname") == sent.id
    assert first.header("x-cloudtasks-queuename") == harness.queue_header


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_method_is_kept(harness: Harness, backend: RecordingBackend, method: str) -> None:
    """Other methods reach the backend as sent; a body only where the method has one."""
    body = b"payload" if method == "PUT" else b""
    async with harness.engine() as engine:
        await engine.enqueue(envelope(harness.queue, method=method, body=body, headers=()))
        [first] = await received(backend, 1)
    assert first.method == method
    assert first.body == body


async def test_schedule_time_is_respected(harness: Harness, backend: RecordingBackend) -> None:
    """A task scheduled ahead is not delivered early, and carries its ETA header."""
    # Scheduled 2.5 s ahead, it must also arrive after an unscheduled one enqueued later.
    mono_minus_wall = time.monotonic() - time.time()
    when = time.time() + 2.5
    later = envelope(harness.queue, body=b"later", schedule_time=when)
    now = envelope(harness.queue, body=b"now")
    async with harness.engine() as engine:
        await engine.enqueue(later)
        await engine.enqueue(now)
        deliveries = await received(backend, 2)
    assert [r.body for r in deliveries[:2]] == [b"now", b"later"]
    scheduled = deliveries[1]
    assert scheduled.at >= when + mono_minus_wall - 0.05
    assert abs(float(scheduled.header("x-cloudtasks-tasketa") or "nan") - when) < 0.001


async def test_ready_once_started(harness: Harness) -> None:
    """check_ready passes on a started engine."""
    async with harness.engine() as engine:
        await engine.check_ready()


async def test_closed_engine_refuses_with_503(harness: Harness) -> None:
    """After aclose, enqueue and check_ready raise EngineUnavailableError (never a 202)."""
    async with harness.engine() as engine:
        pass
    with pytest.raises(EngineUnavailableError):
        await engine.enqueue(envelope(harness.queue))
    with pytest.raises(EngineUnavailableError):
        await engine.check_ready()


# ---------------------------------------------------------------- idempotency


@contextlib.contextmanager
def dedup_case(
    kind: str, request: pytest.FixtureRequest, backend: RecordingBackend, tmp_path: Path
) -> Iterator[tuple[Harness, Callable[[str], list[str]] | None]]:
    """The harness plus, for Cloud Tasks, a probe listing the tasks stored under one id
    (``None`` for the embedded engine, whose deliveries are counted instead)."""
    if kind == "local":
        yield local_harness(backend, tmp_path), None
        return
    if kind == "ctserver":  # ALREADY_EXISTS from a real de-duplicating server; count deliveries
        yield ctserver_harness(backend, request.getfixturevalue("ctserver")), None
        return
    fake: FakeCloudTasks = request.getfixturevalue("fake_cloudtasks")
    settings = cloudtasks_proxy_settings(
        queue="contract", target="http://127.0.0.1:9", host=fake.host
    )
    harness = Harness(
        "cloudtasks", "contract", settings, "", lambda s: CloudTasksEngine(s, Metrics())
    )
    yield harness, lambda task_id: [n for n in fake.tasks if n.endswith(f"/tasks/{task_id}")]


@pytest.mark.parametrize("kind", ["local", "cloudtasks", "ctserver"])
async def test_idempotency_key_is_deduplicated(
    kind: str, request: pytest.FixtureRequest, backend: RecordingBackend, tmp_path: Path
) -> None:
    """The same keyed task twice: the second is reported a duplicate; one task exists."""
    with dedup_case(kind, request, backend, tmp_path) as (harness, stored):
        keyed = envelope(harness.queue, id="k" * 40, idempotency_key="order-7", body=b"keyed")
        marker = envelope(harness.queue, body=b"marker")
        async with harness.engine() as engine:
            first = await engine.enqueue(keyed)
            second = await engine.enqueue(keyed)
            await engine.enqueue(marker)
            if stored is None:  # the embedded engine delivers: count deliveries
                deliveries = await received(backend, 2)
        assert (first.task_id, first.duplicate) == (keyed.id, False)
        assert (second.task_id, second.duplicate) == (keyed.id, True)
        if stored is None:
            assert [r.body for r in deliveries].count(b"keyed") == 1
        else:
            assert len(stored(keyed.id)) == 1
