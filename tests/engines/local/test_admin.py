"""QueueAdmin of the embedded engine (proxy/engines/local/admin.py), on a real file."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from proxy.config.loading import settings_from_dict
from proxy.engines.admin import QueueAdmin
from proxy.engines.local.engine import LocalEngine
from proxy.envelope import Envelope
from proxy.errors import NotFoundError
from proxy.metrics import Metrics
from tests.support.loop_backend import Reply, Seen, loop_backend

pytestmark = pytest.mark.anyio
WAIT = 10.0  # seconds for any one condition


class Backend:
    """A real backend on the test's loop answering with ``status``, recording task ids."""

    def __init__(self) -> None:
        self.status = 200
        self.seen: list[str] = []
        self.url = ""

    def __call__(self, request: Seen) -> Reply:
        self.seen.append(request.headers["x-cloudtasks-taskname"])
        return Reply(self.status, body=b"nope" if self.status >= 300 else b"ok")


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    answer = Backend()
    async with loop_backend(answer) as served:
        answer.url = served.url
        yield answer


def make(tmp_path: Path, backend: Backend, **queue: object) -> LocalEngine:
    settings = settings_from_dict(
        {
            "queues": [{"name": "q", "target": backend.url, **queue}],
            "local": {"db": str(tmp_path / "a.db")},
            "server": {"shutdown_grace": 1},
        }
    )
    return LocalEngine(settings, Metrics())


def envelope(n: int) -> Envelope:
    return Envelope(
        id=f"t{n}", queue="q", method="POST", path=f"/p{n}", query="x=1",
        headers=(("content-type", "text/plain"),), body=b"body %d" % n, received_at=1.0,
        request_id=f"r{n}",
    )  # fmt: skip


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(int(WAIT / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_engine_offers_queue_admin(tmp_path: Path, backend: Backend) -> None:
    """The admin listener finds the QueueAdmin operations on the embedded engine."""
    assert isinstance(make(tmp_path, backend), QueueAdmin)


async def test_pause_holds_deliveries_and_survives_restart(
    tmp_path: Path, backend: Backend
) -> None:
    """A paused queue accepts tasks but delivers none, also after a restart; resume
    delivers them."""
    engine = make(tmp_path, backend)
    await engine.start()
    info = await engine.pause_queue("q")
    assert info.state == "paused"
    for n in range(3):
        await engine.enqueue(envelope(n))
    await asyncio.sleep(0.3)
    assert backend.seen == []
    await engine.aclose()
    engine = make(tmp_path, backend)
    await engine.start()
    try:
        (queue,) = await engine.list_queues()
        assert (queue.state, queue.tasks) == ("paused", 3)
        assert queue.oldest_age is not None
        await engine.resume_queue("q")
        await until(lambda: len(backend.seen) == 3)
        await until(lambda: engine.backlogs["q"].tasks == 0)
    finally:
        await engine.aclose()


async def test_purge_empties_the_queue(tmp_path: Path, backend: Backend) -> None:
    """Purge deletes every waiting task and the counters follow."""
    engine = make(tmp_path, backend)
    await engine.start()
    try:
        await engine.pause_queue("q")
        for n in range(5):
            await engine.enqueue(envelope(n))
        assert await engine.purge_queue("q") == 5
        (queue,) = await engine.list_queues()
        assert (queue.tasks, queue.oldest_age) == (0, None)
        assert (await engine.list_tasks("q", limit=10, cursor=None)).items == []
    finally:
        await engine.aclose()


async def test_list_get_and_delete_tasks(tmp_path: Path, backend: Backend) -> None:
    """Tasks page in due order with a cursor; get shows headers and body; delete removes."""
    engine = make(tmp_path, backend)
    await engine.start()
    try:
        await engine.pause_queue("q")
        for n in range(5):
            await engine.enqueue(envelope(n))
        seen: list[str] = []
        cursor = None
        for _ in range(5):
            page = await engine.list_tasks("q", limit=2, cursor=cursor)
            seen += [task.id for task in page.items]
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == ["t0", "t1", "t2", "t3", "t4"]
        task = await engine.get_task("q", "t3")
        assert (task.path, task.query, task.body) == ("/p3", "x=1", b"body 3")
        assert task.headers == (("content-type", "text/plain"),)
        await engine.delete_task("q", "t3")
        with pytest.raises(NotFoundError):
            await engine.get_task("q", "t3")
        assert engine.backlogs["q"].tasks == 4
        with pytest.raises(NotFoundError):
            await engine.list_tasks("nope", limit=1, cursor=None)
    finally:
        await engine.aclose()


async def test_dead_letters_list_replay_and_drop(tmp_path: Path, backend: Backend) -> None:
    """Dead letters are listed newest first with their last answer; a replayed one is
    delivered again; a dropped one is gone."""
    backend.status = 500
    engine = make(tmp_path, backend, retry={"max_attempts": 1})
    await engine.start()
    try:
        for n in range(3):
            await engine.enqueue(envelope(n))
        await until(lambda: engine.backlogs["q"].dead == 3)
        page = await engine.list_dead_letters("q", limit=2, cursor=None)
        assert len(page.items) == 2
        assert page.next_cursor is not None
        rest = await engine.list_dead_letters("q", limit=2, cursor=page.next_cursor)
        letters = page.items + rest.items
        assert sorted(d.id for d in letters) == ["t0", "t1", "t2"]
        assert {(d.last_status, d.response_snippet) for d in letters} == {(500, "nope")}
        backend.status = 200
        await engine.replay_dead_letter("q", "t1")
        await until(lambda: backend.seen.count("t1") == 2)
        await engine.drop_dead_letter("q", "t0")
        with pytest.raises(NotFoundError):
            await engine.drop_dead_letter("q", "t0")
        assert await engine.replay_dead_letters("q") == 1  # only t2 is left
        await until(lambda: backend.seen.count("t2") == 2)
        await until(lambda: engine.backlogs["q"].tasks == 0)
        assert engine.backlogs["q"].dead == 0
        assert (await engine.list_dead_letters("q", limit=10, cursor=None)).items == []
    finally:
        await engine.aclose()
