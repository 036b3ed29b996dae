"""The Cloud Tasks engine's spool: CreateTask requests Cloud Tasks could not take in time,
in a SQLite file of their own, written through the embedded engine's :class:`Writer`
(one thread, group commit, ``synchronous=FULL`` for every entry a client was told of).

One table, ``spool``: ``id`` is the arrival order; ``name`` the full task name (unique:
a repeated Idempotency-Key finds its first copy); ``request`` the serialized
``CreateTaskRequest``, exactly what is sent once Cloud Tasks answers again. Removing a
forwarded entry need not be durable: an entry that comes back after a power cut is sent
again and meets ALREADY_EXISTS.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from proxy.engines.local.store.writer import Writer
from proxy.errors import EngineUnavailableError

SPOOL_SCHEMA_VERSION = 1
SPOOL_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    request BLOB NOT NULL,
    size INTEGER NOT NULL,
    received_at REAL NOT NULL,
    spooled_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
)
"""
_INSERT = (
    "INSERT INTO spool (name, queue, request, size, received_at, spooled_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING"
)
_COLUMNS = "id, name, queue, size, received_at, spooled_at, attempts, last_error"
_IN_CHUNK = 500  # ids per "IN (...)" list


@dataclass(frozen=True, slots=True)
class NewSpoolEntry:
    """A request to keep: the full task name, its queue, the serialized CreateTask
    request, and when the proxy received it (Unix seconds)."""

    name: str
    queue: str
    request: bytes
    received_at: float


@dataclass(frozen=True, slots=True)
class SpoolEntry:
    """A kept request. ``id`` is its place in arrival order; ``request`` is empty in
    listings; times are Unix seconds; ``size`` the serialized request's bytes."""

    id: int
    name: str
    queue: str
    size: int
    received_at: float
    spooled_at: float
    attempts: int
    last_error: str | None
    request: bytes = b""


class SpoolStore:
    """The spool file at ``path``; ``clock`` returns Unix seconds."""

    def __init__(self, path: str, *, clock: Callable[[], float], synchronous: str = "FULL"):
        self.path = path
        self.clock = clock
        self.writer = Writer(path, synchronous=synchronous)

    def open(self) -> list[SpoolEntry]:
        """Create the table if need be; return every entry already there, in arrival order,
        without its request (blocking). Raises :class:`EngineUnavailableError` when the
        file cannot be opened for writing."""

        def init(conn: sqlite3.Connection) -> list[SpoolEntry]:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SPOOL_SCHEMA_VERSION:
                raise EngineUnavailableError(
                    f"{self.path} was written by a newer ingest-proxy (spool schema {version})."
                )
            conn.execute(SPOOL_SCHEMA)
            conn.execute(f"PRAGMA user_version={SPOOL_SCHEMA_VERSION}")
            return _entries(conn.execute(f"SELECT {_COLUMNS} FROM spool ORDER BY id"))  # noqa: S608

        try:
            return self.writer.start(init)
        except sqlite3.Error as exc:
            raise EngineUnavailableError(f"Cannot open the spool {self.path}: {exc}") from exc

    def close(self) -> None:
        """Finish submitted writes and close the file (blocking)."""
        self.writer.close()

    def add(
        self, entry: NewSpoolEntry, loop: asyncio.AbstractEventLoop | None = None
    ) -> asyncio.Future[SpoolEntry | None]:
        """Keep ``entry``; await the stored :class:`SpoolEntry` once its batch committed
        durably, or ``None`` when an entry of that name is already kept (nothing new is
        written). Disk errors arrive as :class:`EngineUnavailableError`."""
        future: asyncio.Future[SpoolEntry | None]
        future = self.writer.submit_grouped(self._insert, entry, durable=True, loop=loop)
        return future

    def _insert(self, conn: sqlite3.Connection, entries: list[NewSpoolEntry]) -> list[Any]:
        now = self.clock()
        results: list[Any] = []
        for entry in entries:
            size = len(entry.request)
            row = (entry.name, entry.queue, entry.request, size, entry.received_at, now)
            cursor = conn.execute(_INSERT, row)
            if cursor.rowcount != 1:
                results.append(None)
                continue
            assert cursor.lastrowid is not None
            kept = (cursor.lastrowid, entry.name, entry.queue, size, entry.received_at, now)
            results.append(SpoolEntry(*kept, attempts=0, last_error=None))
        return results

    def page(
        self, limit: int, after: int, *, requests: bool = False
    ) -> asyncio.Future[list[SpoolEntry]]:
        """Up to ``limit`` entries with an id above ``after``, in arrival order; their
        requests only with ``requests`` (the forwarder; the admin listing goes without)."""
        columns = f"{_COLUMNS}, request" if requests else _COLUMNS
        sql = f"SELECT {columns} FROM spool WHERE id > ? ORDER BY id LIMIT ?"  # noqa: S608

        def read(conn: sqlite3.Connection) -> list[SpoolEntry]:
            return _entries(conn.execute(sql, (after, limit)))

        return self.writer.submit(read)

    @property
    def last_failure(self) -> tuple[float, str] | None:
        """(monotonic time, reason) of the last failed durable write; ``None`` once a
        durable write succeeded again."""
        return self.writer.last_failure

    def remove(self, ids: list[int]) -> asyncio.Future[None]:
        """Delete the entries ``ids`` (Cloud Tasks holds them now)."""

        def delete(conn: sqlite3.Connection) -> None:
            for start in range(0, len(ids), _IN_CHUNK):
                chunk = ids[start : start + _IN_CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM spool WHERE id IN ({marks})", chunk)  # noqa: S608

        return self.writer.submit(delete)

    def note_failure(self, entry_id: int, error: str) -> asyncio.Future[None]:
        """Count a failed forwarding attempt of the entry ``entry_id``, with what failed."""

        def update(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE spool SET attempts = attempts + 1, last_error = ? WHERE id = ?",
                (error[:500], entry_id),
            )

        return self.writer.submit(update)


def _entries(rows: Any) -> list[SpoolEntry]:
    return [SpoolEntry(*row) for row in rows]
