"""The server's engine room: the SQLite file (the embedded engine's store plus the server's
tables, ``ServerStore``), the queue registry, and one :class:`TaskDispatcher` per queue.

One process owns the file: ``<db>.lock`` is locked while the server runs, as the embedded
engine does, so a proxy and this server never write the same file at once. Everything
runs on one event loop; SQLite writes go through the store's writer thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

from proxy.cloudtasks_server import routing
from proxy.cloudtasks_server.dispatch import TaskDispatcher
from proxy.cloudtasks_server.queues import PAUSED, QueueConfig
from proxy.cloudtasks_server.signing import LocalSigner
from proxy.cloudtasks_server.tasks import LOCAL_ISSUER, local_token
from proxy.cloudtasks_server.validation import (
    DEFAULT_MAX_TASK_BYTES,
    QUEUE_NAME_BLOCK,
    TASK_NAME_BLOCK,
    not_found,
)
from proxy.engines.http_client import ConnectionPool, tls_context
from proxy.engines.local import attempt
from proxy.engines.local.clock import Clock, SystemClock
from proxy.engines.local.lifecycle import DatabaseLock, stop_dispatching
from proxy.engines.local.store.server import ServerStore
from proxy.engines.local.store.store import Store
from proxy.errors import EngineUnavailableError
from proxy.metrics import Metrics

logger = logging.getLogger("ingest_proxy.cloudtasks_server")

PRUNE_INTERVAL = 60.0  # seconds between sweeps of expired tasks and name blocks
TASK_RETENTION = 31 * 86400.0  # seconds: a task is deleted this long after its creation
# seconds a finished operation (BatchCreateTasks) stays readable, and its request_id
# de-duplicated: this server's choice, Cloud Tasks documents none.
OPERATION_RETENTION = 86400.0
SHUTDOWN_GRACE = 5.0  # seconds attempts in flight get at shutdown


class Runtime:
    """Store, queues and dispatchers of one server. ``clock`` exists for tests;
    ``max_task_bytes`` bounds a CreateTask's task (default 100 KiB).

    Each queue delivers on a connection pool of its own, as large as its concurrency cap;
    a queue whose cap changes gets a new pool, and the old one is closed once the attempts
    started on it have finished."""

    def __init__(
        self,
        db: str,
        *,
        max_task_bytes: int = DEFAULT_MAX_TASK_BYTES,
        synchronous: str = "FULL",
        clock: Clock | None = None,
        shutdown_grace: float = SHUTDOWN_GRACE,
        signing_key: str | None = None,
        unsigned_tokens: bool = False,
    ) -> None:
        self.db = db
        # Tokens are signed with this key (made beside the database on first start) unless
        # unsigned_tokens asks for the old unsigned stand-ins; see signing.py.
        self.signing_key = Path(signing_key or f"{db}.signing-key.pem")
        self.unsigned_tokens = unsigned_tokens
        self.signer: LocalSigner | None = None
        self.max_task_bytes = max_task_bytes
        self.clock = clock or SystemClock()
        self.metrics = Metrics()
        self.store = Store(db, synchronous=synchronous, clock=self.clock.time)
        self.server_store = ServerStore(self.store, name_block=TASK_NAME_BLOCK)
        self.queues: dict[str, QueueConfig] = {}
        self.dispatchers: dict[str, TaskDispatcher] = {}
        self.shutdown_grace = shutdown_grace
        self._pools: dict[str, tuple[ConnectionPool, int]] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        self._retired: set[ConnectionPool] = set()  # to close when idle
        self._runs: list[asyncio.Task[None]] = []
        self._db_lock = DatabaseLock(self.db)
        self._tls = tls_context()

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Lock and open the file, load the queues, start their dispatchers."""
        self._db_lock.acquire()
        try:
            if not self.unsigned_tokens:
                self.signer = await asyncio.to_thread(LocalSigner, self.signing_key, LOCAL_ISSUER)
            _, released = await asyncio.to_thread(self.store.open, [])
            await self.server_store.create_tables()
        except (sqlite3.Error, OSError, ValueError) as exc:
            self._db_lock.release()
            raise EngineUnavailableError(f"Cannot use {self.db}: {exc}") from exc
        except BaseException:
            self._db_lock.release()
            raise
        if released:
            logger.info("released %d attempts of an earlier process; retrying them", released)
        rows = self.server_store.queue_rows()
        for row in rows:
            self.set_queue(QueueConfig(*row))
        waiting = self.server_store.task_count()
        logger.info("%s: %d queues, %d tasks waiting", self.db, len(rows), waiting)
        self._runs.append(asyncio.create_task(self._prune()))

    async def aclose(self) -> None:
        """Stop dispatching, give attempts in flight the shutdown grace, close the file."""
        dispatchers = list(self.dispatchers.values())
        await stop_dispatching(dispatchers, self._runs, self.shutdown_grace)
        for dispatcher in dispatchers:
            await dispatcher.cancel_manual()
        for job in list(self._retiring):
            job.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for pool in [*self._retired, *(current for current, _ in self._pools.values())]:
            await pool.close()
        await asyncio.to_thread(self.store.close)
        self._db_lock.release()

    async def _prune(self) -> None:
        while True:
            await self.clock.sleep(PRUNE_INTERVAL)
            now = self.clock.time()
            try:
                expired = await self.server_store.prune(
                    now,
                    queue_block=QUEUE_NAME_BLOCK,
                    retention=TASK_RETENTION,
                    operation_retention=OPERATION_RETENTION,
                )
            except EngineUnavailableError as exc:
                logger.warning("cannot prune expired tasks and name blocks: %s", exc)
                continue
            if expired:
                logger.info("deleted %d tasks older than 31 days (task retention)", expired)

    def token(self, spec_json: str, now: float) -> str:
        """The token a task's token request asks for: signed by :attr:`signer`, or the
        unsigned stand-in when tokens are unsigned."""
        if self.signer is None:
            return local_token(spec_json, now)
        return self.signer.token(spec_json, now)

    # ------------------------------------------------------------ queues

    def queue(self, name: str) -> QueueConfig:
        """The queue called ``name`` (full name); NOT_FOUND when there is none."""
        config = self.queues.get(name)
        if config is None:
            raise not_found(f"Queue {name} does not exist.")
        return config

    def set_queue(self, config: QueueConfig) -> None:
        """Use ``config`` for its queue from now on: a new dispatcher when the limits
        changed. Attempts in flight of the old one finish and still count toward the
        concurrency cap (the dispatchers share their in-flight table)."""
        old = self.queues.get(config.name)
        self.queues[config.name] = config
        dispatcher = self.dispatchers.get(config.name)
        if dispatcher is not None and old is not None and old.settings() == config.settings():
            dispatcher.set_paused(config.state == PAUSED)
            dispatcher.routing = routing.parse(config.http_target)
            return
        settings = config.settings()
        pool = self._pool(config.name, settings.concurrency, dispatcher)
        fresh = TaskDispatcher(
            settings,
            store=self.store,
            sender=attempt.PoolSender(pool),
            clock=self.clock,
            metrics=self.metrics,
        )
        fresh.configure(config.short_name, self.server_store, self.token)
        fresh.routing = routing.parse(config.http_target)
        fresh.paused = config.state == PAUSED
        if dispatcher is not None:
            dispatcher.stop()
            fresh.in_flight = dispatcher.in_flight
        self.dispatchers[config.name] = fresh
        self._runs.append(asyncio.create_task(fresh.run()))

    def drop_queue(self, name: str) -> None:
        """Forget a deleted queue (its attempts in flight finish, their outcome is lost)."""
        self.queues.pop(name, None)
        dispatcher = self.dispatchers.pop(name, None)
        if dispatcher is not None:
            dispatcher.stop()
        old = self._pools.pop(name, None)
        if old is not None:
            self._retire(old[0], dispatcher)

    def _pool(self, name: str, concurrency: int, previous: TaskDispatcher | None) -> ConnectionPool:
        """The pool of queue ``name``: the current one while its size fits, else a new one."""
        current = self._pools.get(name)
        if current is not None and current[1] == concurrency:
            return current[0]
        pool = ConnectionPool(concurrency, self._tls)
        self._pools[name] = (pool, concurrency)
        if current is not None:
            self._retire(current[0], previous)
        return pool

    def _retire(self, pool: ConnectionPool, dispatcher: TaskDispatcher | None) -> None:
        """Close ``pool`` once the attempts in flight on it (those of ``dispatcher``,
        manual runs included) have finished."""
        pending = set(dispatcher.in_flight.values()) | dispatcher.manual if dispatcher else set()

        self._retired.add(pool)

        async def close() -> None:
            if pending:
                await asyncio.wait(pending)
            self._retired.discard(pool)
            await pool.close()

        job = asyncio.create_task(close())
        self._retiring.add(job)
        job.add_done_callback(self._retiring.discard)
