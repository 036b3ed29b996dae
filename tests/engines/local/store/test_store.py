"""SQLite task store on a real file (proxy/engines/local/store/store.py, writer.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from proxy.engines.local.clock import ManualClock
from proxy.engines.local.store import writer
from proxy.engines.local.store.schema import SCHEMA_VERSION
from proxy.engines.local.store.store import AttemptResult, Store
from proxy.envelope import Envelope
from proxy.errors import EngineUnavailableError

pytestmark = pytest.mark.anyio


def envelope(n: int, *, queue: str = "q", key: str | None = None, at: float = 1000.0,
             schedule: float | None = None, body: bytes | None = None) -> Envelope:  # fmt: skip
    return Envelope(
        id=key or f"task{n}",
        queue=queue,
        method="POST",
        path=f"/p/{n}",
        query="a=1",
        headers=(("content-type", "text/plain"), ("x-n", str(n))),
        body=body if body is not None else f"body {n}".encode(),
        received_at=at + n,
        schedule_time=schedule,
        idempotency_key=key,
        request_id=f"r{n}",
    )


class Harness:
    """A store on a file in tmp_path with a manual clock and recorded batch sizes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = ManualClock(start=2000.0)
        self.batches: list[int] = []
        self.store = self.make()

    def make(self) -> Store:
        return Store(
            str(self.path), dedup_window=60, clock=self.clock.time, on_batch=self.batches.append
        )

    def count(self, sql: str = "SELECT COUNT(*) FROM tasks") -> int:
        with sqlite3.connect(self.path) as conn:
            return int(conn.execute(sql).fetchone()[0])


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path / "tasks.db")
    harness.store.open(["q", "other"])
    yield harness
    harness.store.close()


async def block_writer(store: Store) -> tuple[threading.Event, asyncio.Future[None]]:
    """Park the writer thread in a job (alone in its batch) until the event is set."""
    started = threading.Event()
    release = threading.Event()

    def park(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    future = store.writer.submit(park)
    assert await asyncio.to_thread(started.wait, 10)
    return release, future


async def test_enqueue_persists_the_envelope(h: Harness) -> None:
    """An enqueued task is in the file with its method, path, headers and body."""
    result = await h.store.enqueue(envelope(1))
    assert (result.task_id, result.queue, result.duplicate) == ("task1", "q", False)
    lease = await h.store.lease("q", now=3000, limit=10)
    (task,) = lease.tasks
    assert task.envelope.body == b"body 1"
    assert task.envelope.headers == (("content-type", "text/plain"), ("x-n", "1"))
    assert (task.envelope.method, task.envelope.path, task.envelope.query) == (
        "POST",
        "/p/1",
        "a=1",
    )
    assert task.eta == 1001.0


async def test_waiting_enqueues_commit_in_one_batch(h: Harness) -> None:
    """Enqueues that wait while the writer is busy are written in one transaction."""
    release, blocker = await block_writer(h.store)
    futures = [h.store.enqueue(envelope(n)) for n in range(50)]
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in futures)  # no answer before the commit
    release.set()
    await blocker
    await asyncio.gather(*futures)
    assert h.batches == [50]
    assert h.count() == 50


async def test_answer_comes_only_after_commit(h: Harness) -> None:
    """When an enqueue resolves, another connection already sees the row."""
    await h.store.enqueue(envelope(1))
    assert h.count() == 1


async def test_duplicate_key_within_window_returns_first_task(h: Harness) -> None:
    """A repeated Idempotency-Key within the window stores nothing new."""
    first = await h.store.enqueue(envelope(1, key="k1"))
    again = await h.store.enqueue(envelope(2, key="k1", queue="other"))
    assert (again.task_id, again.queue, again.duplicate) == (first.task_id, "q", True)
    assert h.count() == 1


async def test_duplicate_keys_in_one_batch(h: Harness) -> None:
    """Two requests with one key in the same batch store one task."""
    release, blocker = await block_writer(h.store)
    futures = [h.store.enqueue(envelope(n, key="same")) for n in range(2)]
    release.set()
    await blocker
    results = await asyncio.gather(*futures)
    assert [r.duplicate for r in results] == [False, True]
    assert h.count() == 1


async def test_batch_sizes_count_stored_tasks_only(h: Harness) -> None:
    """The batch sizes count the tasks a commit stored: a duplicate of an Idempotency-Key
    (alone or beside new tasks) and the readiness probe store none and are not counted."""
    await h.store.enqueue(envelope(1, key="k1"))
    await h.store.enqueue(envelope(2, key="k1"))  # a duplicate alone: no batch of tasks
    await h.store.probe()
    release, blocker = await block_writer(h.store)
    futures = [h.store.enqueue(envelope(n, key="k1" if n == 3 else None)) for n in (3, 4, 5)]
    release.set()
    await blocker
    assert [r.duplicate for r in await asyncio.gather(*futures)] == [True, False, False]
    assert h.batches == [1, 2]
    assert h.count() == 3


async def test_key_is_reusable_after_the_window(h: Harness) -> None:
    """After dedup_window seconds the same key creates a new task, and pruning forgets it."""
    await h.store.enqueue(envelope(1, key="k1"))
    h.clock.advance(61)
    again = await h.store.enqueue(envelope(2, key="k1"))
    assert not again.duplicate
    assert h.count() == 2
    h.clock.advance(61)
    assert await h.store.prune_dedup(h.clock.time()) == 1


async def test_lease_takes_due_tasks_in_eta_order(h: Harness) -> None:
    """Due tasks come oldest ETA first; future ones stay; held ones are skipped."""
    await h.store.enqueue(envelope(1, schedule=1500))
    await h.store.enqueue(envelope(2))  # eta 1002
    await h.store.enqueue(envelope(3, schedule=5000))
    first = await h.store.lease("q", now=2000, limit=10)
    assert [t.envelope.id for t in first.tasks] == ["task2", "task1"]
    assert first.next_due == 5000
    held = frozenset(t.seq for t in first.tasks)
    again = await h.store.lease("q", now=2000, limit=10, held=held)
    assert (again.tasks, again.next_due) == ([], 5000)


async def test_held_tasks_are_skipped_not_counted(h: Harness) -> None:
    """With the oldest due task held, a lease of one takes the next one."""
    for n in range(3):
        await h.store.enqueue(envelope(n))
    (oldest,) = (await h.store.lease("q", now=2000, limit=1)).tasks
    (second,) = (await h.store.lease("q", now=2000, limit=1, held=frozenset({oldest.seq}))).tasks
    assert (oldest.envelope.id, second.envelope.id) == ("task0", "task1")
    rest = await h.store.lease("q", now=2000, limit=5, held=frozenset({oldest.seq, second.seq}))
    assert [t.envelope.id for t in rest.tasks] == ["task2"]


async def test_a_lease_writes_nothing(h: Harness) -> None:
    """A leased task stays due in the file: if its attempt is never recorded (the process
    stopped), it is taken again once nobody holds it."""
    await h.store.enqueue(envelope(1))
    (task,) = (await h.store.lease("q", now=2000, limit=1)).tasks
    assert h.store.read("SELECT leased, visible_at FROM tasks") == [(0, 1001.0)]
    (again,) = (await h.store.lease("q", now=2000, limit=1)).tasks
    assert again.seq == task.seq


async def test_restart_releases_leases_of_the_previous_process(h: Harness) -> None:
    """Reopening the file makes tasks leased in the file by the earlier process (the
    local Cloud Tasks server's RunTask does that) due at once."""
    for n in range(5):
        await h.store.enqueue(envelope(n))
    sql = "UPDATE tasks SET visible_at = 99999, leased = 1 WHERE seq IN (1, 2, 3)"
    await h.store.writer.submit(lambda conn: conn.execute(sql) and None)
    assert len((await h.store.lease("q", now=2000, limit=10)).tasks) == 2
    h.store.close()
    h.store = h.make()
    counts, released = h.store.open(["q"])
    assert released == 3
    assert counts["q"].tasks == 5
    again = await h.store.lease("q", now=2000, limit=10)
    assert len(again.tasks) == 5


async def test_complete_deletes_and_counts(h: Harness) -> None:
    """A completed task leaves the file and the queue counters."""
    await h.store.enqueue(envelope(1))
    await h.store.enqueue(envelope(2))
    (task, _) = (await h.store.lease("q", now=2000, limit=2)).tasks
    await h.store.complete(task)
    assert h.count() == 1
    assert h.store.counts()["q"].tasks == 1
    assert h.store.counts()["q"].bytes == len(b"body 2")


async def test_retry_records_the_attempt_and_next_eta(h: Harness) -> None:
    """A failed attempt bumps the counts, keeps the status and sets the next ETA."""
    await h.store.enqueue(envelope(1))
    (task,) = (await h.store.lease("q", now=2000, limit=1)).tasks
    await h.store.retry(task, AttemptResult(2000, 500, False, "boom"), eta=2010)
    assert (await h.store.lease("q", now=2009, limit=1)).tasks == []
    (again,) = (await h.store.lease("q", now=2010, limit=1)).tasks
    assert (again.attempts, again.responses, again.last_status, again.eta) == (1, 0, 500, 2010)
    assert again.first_attempt_at == 2000


async def test_dead_letter_keeps_status_and_snippet(h: Harness) -> None:
    """A task out of attempts moves to the dead-letter table with its last answer."""
    await h.store.enqueue(envelope(1))
    (task,) = (await h.store.lease("q", now=2000, limit=1)).tasks
    await h.store.dead_letter(task, AttemptResult(2000, 404, True, "no such thing"), now=2001)
    assert h.count() == 0
    (dead,) = h.store.dead_letters("q")
    assert (dead.id, dead.last_status, dead.last_error, dead.attempts) == (
        "task1",
        404,
        "no such thing",
        1,
    )
    assert h.store.counts()["q"].dead == 1
    assert h.count("SELECT COUNT(*) FROM dead_letters WHERE CAST(body AS TEXT) = 'body 1'") == 1


async def test_oldest_task_age_source(h: Harness) -> None:
    """The oldest task's arrival time is read from the index; None when empty."""
    assert h.store.oldest_received_at("q") is None
    await h.store.enqueue(envelope(5))
    await h.store.enqueue(envelope(1))
    assert h.store.oldest_received_at("q") == 1005.0


async def test_due_and_scheduled_tasks(h: Harness) -> None:
    """A task scheduled ahead is counted as scheduled and is not due until its time; the
    task due first gives when lateness starts (its schedule time, not its arrival)."""
    assert (h.store.oldest_due_at("q", 1000.0), h.store.scheduled_count("q", 1000.0)) == (
        None,
        0,
    )
    await h.store.enqueue(envelope(1, schedule=1001.0 + 7200))  # arrives at 1001
    await h.store.enqueue(envelope(2, queue="other"))
    assert (h.store.oldest_due_at("q", 5000.0), h.store.scheduled_count("q", 5000.0)) == (
        None,
        1,
    )
    await h.store.enqueue(envelope(3))  # arrives at 1003, due at once
    assert h.store.oldest_due_at("q", 5000.0) == 1003.0
    at = 1001.0 + 7200 + 60
    assert (h.store.oldest_due_at("q", at), h.store.scheduled_count("q", at)) == (1003.0, 0)
    assert h.store.scheduled_count("other", 5000.0) == 0


async def test_a_retry_is_due_from_its_own_time(h: Harness) -> None:
    """A task waiting for its retry is scheduled; once that time comes it is due from it."""
    await h.store.enqueue(envelope(1))
    (task,) = (await h.store.lease("q", now=1100.0, limit=1)).tasks
    await h.store.retry(task, AttemptResult(1100.0, 503, True, "busy"), eta=1160.0)
    assert (h.store.oldest_due_at("q", 1130.0), h.store.scheduled_count("q", 1130.0)) == (
        None,
        1,
    )
    assert (h.store.oldest_due_at("q", 1190.0), h.store.scheduled_count("q", 1190.0)) == (
        1160.0,
        0,
    )


async def run_on_writer(store: Store, fn: Callable[[sqlite3.Connection], object]) -> None:
    await store.writer.submit(lambda conn: fn(conn) and None)


async def test_disk_full_fails_the_batch_and_stores_nothing(h: Harness) -> None:
    """SQLITE_FULL turns into EngineUnavailableError for every enqueue of the batch."""
    await h.store.enqueue(envelope(0))
    await run_on_writer(
        h.store,
        lambda c: c.execute(
            f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}"
        ),
    )
    release, blocker = await block_writer(h.store)
    futures = [h.store.enqueue(envelope(n, body=b"x" * 20000)) for n in range(1, 4)]
    release.set()
    await blocker
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, EngineUnavailableError) for r in results)
    assert "full" in str(results[0])
    assert h.count() == 1
    assert h.store.counts()["q"].tasks == 1
    with pytest.raises(EngineUnavailableError):
        await h.store.probe()
    await run_on_writer(h.store, lambda c: c.execute("PRAGMA max_page_count=1073741823"))
    await h.store.enqueue(envelope(9, body=b"x" * 20000))
    assert h.count() == 2


async def test_a_failed_enqueue_does_not_fail_the_completions_beside_it(h: Harness) -> None:
    """On a full disk, the enqueues of a batch fail but the completions that rode with
    them are committed on their own (a lost completion would mean a second delivery)."""
    await h.store.enqueue(envelope(0))
    (task,) = (await h.store.lease("q", now=3000, limit=1)).tasks
    await run_on_writer(
        h.store,
        lambda c: c.execute(
            f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}"
        ),
    )
    release, blocker = await block_writer(h.store)
    completion = h.store.complete(task)
    enqueues = [h.store.enqueue(envelope(n, body=b"x" * 20000)) for n in range(1, 4)]
    release.set()
    await blocker
    results = await asyncio.gather(*enqueues, return_exceptions=True)
    assert all(isinstance(r, EngineUnavailableError) for r in results)
    assert await completion is True
    assert h.count() == 0
    assert h.store.counts()["q"].tasks == 0


async def test_completions_gather_and_go_together(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A completion is not written at once, nor with the next other job: completions
    gather (here until two are waiting) and then go in one batch."""
    monkeypatch.setattr(writer, "BOOKKEEPING_GATHER_SECONDS", 600.0)
    monkeypatch.setattr(writer, "LAZY_MAX", 2)
    await h.store.enqueue(envelope(0))
    await h.store.enqueue(envelope(1))
    first, second = (await h.store.lease("q", now=3000, limit=2)).tasks
    completion = h.store.complete(first)
    lease = await h.store.lease("q", now=3000, limit=5)  # goes, and without it
    assert [t.seq for t in lease.tasks] == [first.seq, second.seq]
    assert not completion.done()
    assert await asyncio.gather(completion, h.store.complete(second)) == [True, True]
    assert h.count() == 0


async def test_read_only_store_is_unavailable(h: Harness) -> None:
    """A store that cannot write fails the readiness probe and enqueues."""
    await run_on_writer(h.store, lambda c: c.execute("PRAGMA query_only=1"))
    with pytest.raises(EngineUnavailableError):
        await h.store.probe()
    with pytest.raises(EngineUnavailableError):
        await h.store.enqueue(envelope(1))
    assert h.count() == 0


async def test_locked_database_is_unavailable(h: Harness) -> None:
    """Another process holding the write lock makes enqueues fail, not hang."""
    await run_on_writer(h.store, lambda c: c.execute("PRAGMA busy_timeout=200"))
    other = sqlite3.connect(h.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(EngineUnavailableError, match="locked"):
            await asyncio.wait_for(h.store.enqueue(envelope(1)), timeout=10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert (await h.store.enqueue(envelope(2))).task_id == "task2"


async def test_missing_directory_cannot_open(tmp_path: Path) -> None:
    """A database path in a directory that does not exist fails at open."""
    store = Store(str(tmp_path / "nope" / "x.db"), clock=lambda: 0.0)
    with pytest.raises(EngineUnavailableError, match="Cannot open"):
        store.open(["q"])


async def test_closed_store_refuses_work(h: Harness) -> None:
    """After close, an enqueue is refused at once."""
    h.store.close()
    with pytest.raises(EngineUnavailableError, match="closed"):
        h.store.enqueue(envelope(1))
    h.store = h.make()
    h.store.open(["q"])


async def test_deleted_database_file_is_unavailable(h: Harness) -> None:
    """If the file is deleted under a running store, enqueues fail instead of being written
    to an unlinked file that the next start would never see."""
    await h.store.enqueue(envelope(1))
    h.path.unlink()
    with pytest.raises(EngineUnavailableError, match="removed or replaced"):
        await h.store.enqueue(envelope(2))
    with pytest.raises(EngineUnavailableError):
        await h.store.probe()


async def test_a_schema_1_file_is_upgraded_and_its_json_headers_still_read(
    tmp_path: Path,
) -> None:
    """A file of an earlier version (schema 1: headers stored as JSON) opens, is marked with
    the current schema (so that earlier versions refuse it from then on), and its tasks are
    leased with their headers."""
    path = tmp_path / "old.db"
    first = Store(str(path), clock=lambda: 2000.0)
    first.open(["q"])
    first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "INSERT INTO tasks (id, queue, method, path, query, headers, body, size,"
            " received_at, request_id, eta, visible_at)"
            " VALUES ('old1', 'q', 'POST', '/p', '', ?, x'6869', 2, 1.0, 'r1', 1.0, 1.0)",
            (json.dumps([["content-type", "text/plain"], ["x-a", "1"]]),),
        )
        conn.execute("UPDATE counters SET tasks = 1, bytes = 2 WHERE queue = 'q'")
        conn.execute("PRAGMA user_version = 1")
    store = Store(str(path), clock=lambda: 2000.0)
    counts, _ = store.open(["q"])
    try:
        assert counts["q"].tasks == 1
        lease = await store.lease("q", now=10.0, limit=5)
        assert [t.envelope.headers for t in lease.tasks] == [
            (("content-type", "text/plain"), ("x-a", "1"))
        ]
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_file_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    """A file written by a newer ingest-proxy is not opened (nothing in it is touched)."""
    path = tmp_path / "new.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(EngineUnavailableError, match="newer ingest-proxy"):
        Store(str(path), clock=lambda: 2000.0).open(["q"])
