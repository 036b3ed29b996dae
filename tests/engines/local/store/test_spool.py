"""The spool's file (SpoolStore) on real SQLite files: order, unique names, removal,
what survives a reopen, and a full disk."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.engines.local.store.spool import NewSpoolEntry, SpoolStore
from proxy.errors import EngineUnavailableError

pytestmark = pytest.mark.anyio
NOW = 5000.0


def entry(n: int, size: int = 10) -> NewSpoolEntry:
    return NewSpoolEntry(f"projects/p/locations/l/queues/q/tasks/t{n}", "q", b"r" * size, 100.0 + n)


@pytest.fixture
async def spool(tmp_path: Path) -> AsyncIterator[SpoolStore]:
    store = SpoolStore(str(tmp_path / "spool.db"), clock=lambda: NOW)
    await asyncio.to_thread(store.open)
    try:
        yield store
    finally:
        await asyncio.to_thread(store.close)


async def test_entries_come_back_in_arrival_order_with_their_requests(spool: SpoolStore) -> None:
    """add() answers the stored entry; page() gives them in arrival order, the request
    bytes only when asked for."""
    stored = [await spool.add(entry(n, size=n + 1)) for n in range(3)]
    assert [s.name[-2:] for s in stored if s] == ["t0", "t1", "t2"]
    assert [s.size for s in stored if s] == [1, 2, 3]
    assert all(s is not None and s.spooled_at == NOW for s in stored)
    full = await spool.page(10, 0, requests=True)
    assert [e.request for e in full] == [b"r", b"rr", b"rrr"]
    assert [e.received_at for e in full] == [100.0, 101.0, 102.0]
    bare = await spool.page(1, full[0].id)
    assert [(e.name, e.request) for e in bare] == [(full[1].name, b"")]


async def test_a_name_is_kept_once(spool: SpoolStore) -> None:
    """A second entry of the same name writes nothing and answers None, also in one batch."""
    assert await spool.add(entry(1)) is not None
    assert await spool.add(entry(1)) is None
    together = await asyncio.gather(spool.add(entry(2)), spool.add(entry(2)))
    assert sum(result is not None for result in together) == 1
    assert len(await spool.page(10, 0)) == 2


async def test_removed_entries_are_gone_and_failures_are_noted(spool: SpoolStore) -> None:
    """remove() deletes by id; note_failure() counts attempts and keeps the last error."""
    first, second = [await spool.add(entry(n)) for n in range(2)]
    assert first is not None
    assert second is not None
    await spool.note_failure(second.id, "UNAVAILABLE: down")
    await spool.note_failure(second.id, "UNAVAILABLE: still down")
    await spool.remove([first.id])
    [left] = await spool.page(10, 0)
    assert (left.id, left.attempts, left.last_error) == (second.id, 2, "UNAVAILABLE: still down")


async def test_entries_survive_a_reopen(tmp_path: Path) -> None:
    """What was added is there after closing and opening the file again."""
    path = str(tmp_path / "spool.db")
    store = SpoolStore(path, clock=lambda: NOW)
    await asyncio.to_thread(store.open)
    await store.add(entry(1))
    await store.add(entry(2))
    await asyncio.to_thread(store.close)
    again = SpoolStore(path, clock=lambda: NOW)
    reopened = await asyncio.to_thread(again.open)
    await asyncio.to_thread(again.close)
    assert [e.name[-2:] for e in reopened] == ["t1", "t2"]


async def test_a_full_disk_refuses_the_entry(spool: SpoolStore) -> None:
    """At SQLite's max_page_count (the disk full, as the store's tests simulate it) add()
    raises EngineUnavailableError and keeps nothing; last_failure says so until a write
    succeeds again."""
    await spool.add(entry(0))

    def cap(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count={pages}")

    await spool.writer.submit(cap)
    with pytest.raises(EngineUnavailableError, match="full"):
        await spool.add(entry(1, size=60_000))
    assert spool.last_failure is not None
    assert len(await spool.page(10, 0)) == 1
    await spool.writer.submit(
        lambda conn: conn.execute("PRAGMA max_page_count=1073741823") and None
    )
    assert await spool.add(entry(2, size=60_000)) is not None
    assert spool.last_failure is None
