"""What every owner of a task database does at start and stop: hold its lock file, and
stop its dispatchers with a grace period. Shared by the embedded engine and the local
Cloud Tasks server."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
from collections.abc import Iterable
from typing import IO

from proxy.engines.local.dispatcher import Dispatcher
from proxy.errors import EngineUnavailableError

logger = logging.getLogger("ingest_proxy.local")


class DatabaseLock:
    """An exclusive ``flock`` on ``<db>.lock``: one process per database file."""

    def __init__(self, db: str) -> None:
        self.db = db
        self.path = db + ".lock"
        self._handle: IO[bytes] | None = None

    def acquire(self) -> None:
        """Take the lock; :class:`EngineUnavailableError` when another process holds it."""
        try:
            handle = open(self.path, "ab")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise EngineUnavailableError(f"Cannot open {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise EngineUnavailableError(
                f"{self.db} is in use by another process (one ingest-proxy per database file)."
            ) from None
        self._handle = handle

    def release(self) -> None:
        """Let the lock go (closing the file drops the flock)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None


async def stop_dispatching(
    dispatchers: Iterable[Dispatcher], background: Iterable[asyncio.Task[None]], grace: float
) -> int:
    """Stop every dispatcher and background task, give the attempts in flight of all queues
    together ``grace`` seconds, and cancel those still running. Their leases were never
    written (the dispatchers hold them in memory), so those tasks are due again at the
    next start. Returns how many were cancelled."""
    dispatchers = list(dispatchers)
    for dispatcher in dispatchers:
        dispatcher.stop()
    tasks = list(background)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    drained = await asyncio.gather(*(d.drain(grace) for d in dispatchers))
    abandoned = sum(len(seqs) for seqs in drained)
    if abandoned:
        logger.info(
            "cancelled %d attempts still in flight at shutdown: delivered again at the next start",
            abandoned,
        )
    return abandoned
