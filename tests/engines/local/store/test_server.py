"""The local Cloud Tasks server's tables on a real file (proxy/engines/local/store/server.py):
the version 1 -> 2 migration, and operations kept beside their tasks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from proxy.engines.local.clock import ManualClock
from proxy.engines.local.store.server import SERVER_SCHEMA_VERSION, NewTask, ServerStore
from proxy.engines.local.store.store import Store

pytestmark = pytest.mark.anyio

# ct_queues and ct_meta as version 1 of the server wrote them.
V1_TABLES = """
CREATE TABLE ct_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE ct_queues (
    name TEXT PRIMARY KEY, rate REAL NOT NULL, concurrency INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL, min_backoff REAL NOT NULL, max_backoff REAL NOT NULL,
    max_doublings INTEGER NOT NULL, max_retry_duration REAL NOT NULL,
    sampling_ratio REAL NOT NULL, state INTEGER NOT NULL, purge_time REAL NOT NULL
) WITHOUT ROWID;
INSERT INTO ct_meta VALUES ('version', '1');
INSERT INTO ct_queues VALUES ('projects/p/locations/l/queues/old', 5, 10, 100, 0.1, 3600, 16,
                              0, 0, 1, 0);
"""
QUEUE = "projects/p/locations/l/queues/old"
CLOCK = ManualClock(start=1000.0)


def task(n: int) -> NewTask:
    return NewTask(
        name=f"{QUEUE}/tasks/t{n}", task_id=f"t{n}", named=True, url="http://127.0.0.1:9/",
        method="POST", headers=(), body=b"x", token=None, dispatch_deadline=600.0,
        schedule_time=1000.0, create_time=1000.0,
    )  # fmt: skip


@pytest.fixture
async def v1_file(tmp_path: Path) -> Path:
    """A file with the engine's tables and the server's version 1 tables, one queue."""
    path = tmp_path / "tasks.db"
    store = Store(str(path), clock=CLOCK.time)
    await asyncio.to_thread(store.open, [])
    await asyncio.to_thread(store.close)
    with sqlite3.connect(path) as conn:
        conn.executescript(V1_TABLES)
    return path


async def opened(path: Path) -> tuple[Store, ServerStore]:
    store = Store(str(path), clock=CLOCK.time)
    await asyncio.to_thread(store.open, [])
    server = ServerStore(store, name_block=3600.0)
    await server.create_tables()
    return store, server


async def test_version_1_file_is_migrated(v1_file: Path) -> None:
    """A version 1 file opens: its queue reads back with no queue-level target, a target
    can be stored, operations can be kept, and the file says version 2 afterwards."""
    store, server = await opened(v1_file)
    try:
        [row] = server.queue_rows()
        assert row[0] == QUEUE
        assert row[-1] == b""
        assert await server.save_queue((*row[:-1], b"\x0a\x00"), create=False)
        assert server.queue_rows()[0][-1] == b"\x0a\x00"
        body = await server.insert_batch(QUEUE, [task(1)], 1000.0, "op", lambda seqs: b"done")
        assert body == b"done"
        assert await server.operation("op") == b"done"
    finally:
        await asyncio.to_thread(store.close)
    with sqlite3.connect(v1_file) as conn:
        version = conn.execute("SELECT value FROM ct_meta WHERE key = 'version'").fetchone()
    assert int(version[0]) == SERVER_SCHEMA_VERSION == 2


async def test_newer_file_is_refused(v1_file: Path) -> None:
    """A file written by a newer server (a higher version) is not opened."""
    with sqlite3.connect(v1_file) as conn:
        conn.execute("UPDATE ct_meta SET value = '99' WHERE key = 'version'")
    store = Store(str(v1_file), clock=CLOCK.time)
    await asyncio.to_thread(store.open, [])
    try:
        with pytest.raises(Exception, match="newer local Cloud Tasks server"):
            await ServerStore(store, name_block=3600.0).create_tables()
    finally:
        await asyncio.to_thread(store.close)


async def test_batch_inserts_once_per_operation(v1_file: Path) -> None:
    """insert_batch stores the tasks and the operation together; a second call with the
    same operation name inserts nothing and answers the stored operation; a name taken
    inside the batch is reported as None to ``finish``."""
    store, server = await opened(v1_file)
    outcomes: list[list[int | None]] = []

    def finish(seqs: list[int | None]) -> bytes:
        outcomes.append(seqs)
        return str(len(outcomes)).encode()

    try:
        first = await server.insert_batch(QUEUE, [task(1), task(1), task(2)], 1000.0, "op", finish)
        again = await server.insert_batch(QUEUE, [task(3)], 1000.0, "op", finish)
        assert (first, again) == (b"1", b"1")
        [seqs] = outcomes
        assert seqs[0] is not None
        assert seqs[1] is None
        assert seqs[2] is not None
        assert server.task_count() == 2
    finally:
        await asyncio.to_thread(store.close)
