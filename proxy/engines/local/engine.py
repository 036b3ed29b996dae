"""LocalEngine: the embedded engine (SQLite store + per-queue dispatchers)."""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import ssl

from proxy.config.settings import QueueSettings, Settings
from proxy.engines.admin import QueueInfo
from proxy.engines.http_client import ConnectionPool, tls_context
from proxy.engines.local.admin import LocalAdmin
from proxy.engines.local.attempt import PoolSender, Sender
from proxy.engines.local.clock import Clock, SystemClock
from proxy.engines.local.delivery_worker import DeliveryWorker
from proxy.engines.local.dispatcher import Dispatcher
from proxy.engines.local.lifecycle import DatabaseLock, stop_dispatching
from proxy.engines.local.store.admin import AdminStore
from proxy.engines.local.store.store import Store
from proxy.engines.tokens import AccessTokens, IdTokens, Tokens
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import BacklogFullError, EngineUnavailableError, TaskRejectedError
from proxy.metrics import Metrics

logger = logging.getLogger("ingest_proxy.local")

# Bound per queue when neither max_backlog_tasks nor max_backlog_bytes is set.
DEFAULT_MAX_BACKLOG_TASKS = 1_000_000
DEFAULT_MAX_BACKLOG_BYTES = 1024**3
DEDUP_PRUNE_INTERVAL = 60.0
MAX_RETRY_AFTER = 3600.0


class _Backlog:
    """Live counters of one queue, including enqueues not yet committed."""

    __slots__ = ("bytes", "dead", "max_bytes", "max_tasks", "tasks")

    def __init__(self, queue: QueueSettings) -> None:
        unbounded = queue.max_backlog_tasks is None and queue.max_backlog_bytes is None
        self.max_tasks = queue.max_backlog_tasks or (
            DEFAULT_MAX_BACKLOG_TASKS if unbounded else math.inf
        )
        self.max_bytes = queue.max_backlog_bytes or (
            DEFAULT_MAX_BACKLOG_BYTES if unbounded else math.inf
        )
        self.tasks = 0
        self.bytes = 0
        self.dead = 0

    def depth(self) -> float:
        return float(self.tasks)

    def dead_letters(self) -> float:
        return float(self.dead)


class LocalEngine(LocalAdmin):
    """Persist tasks in the SQLite file ``settings.local.db`` and deliver them.

    A 202 is sent only after the task's batch committed with ``settings.local.synchronous``
    (``FULL``: fsync'd). Each queue has a backlog bound (``max_backlog_tasks`` and/or
    ``max_backlog_bytes``; when neither is set, 1,000,000 tasks and 1 GiB of bodies); beyond
    it :meth:`enqueue` raises :class:`BacklogFullError` with a Retry-After of the time the
    dispatcher needs to free a tenth of the bound at its current rate (1 s to 1 h). A store
    that cannot write (disk full, database locked, read-only) gives
    :class:`EngineUnavailableError` (503) and stores nothing.

    One process owns the file: ``<db>.lock`` is locked (``flock``) while the engine runs, and
    a second engine on the same file refuses to start. On start, attempts that an earlier
    process left in flight (killed, crashed) are due again at once; delivery is at least
    once. ``clock`` exists for tests; ``tls`` is the client context for https targets
    (the system's CA bundle when omitted).
    """

    name = "local"

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Clock | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.clock = clock or SystemClock()
        self._tls = tls
        self.store = Store(
            settings.local.db,
            synchronous=settings.local.synchronous,
            dedup_window=settings.local.dedup_window,
            clock=self.clock.time,
            on_batch=metrics.commit_batch_size.observe,
        )
        self.admin_store = AdminStore(self.store)
        self.backlogs = {queue.name: _Backlog(queue) for queue in settings.queues}
        self.dispatchers: dict[str, Dispatcher] = {}
        self._pools: list[ConnectionPool] = []
        self._workers: list[DeliveryWorker] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._db_lock = DatabaseLock(settings.local.db)
        self._closing = False
        self._started = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tokens: dict[tuple[str, str, str | None], Tokens] = {}  # (kind, subject, email)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Lock and open the database, release leases of an earlier process, start the
        dispatchers. Raises :class:`EngineUnavailableError` when the file cannot be used."""
        self._loop = asyncio.get_running_loop()
        self._db_lock.acquire()
        try:
            counts, released = await asyncio.to_thread(self.store.open, self.backlogs)
        except BaseException:
            self._db_lock.release()
            raise
        if released:
            logger.info("released %d leases of an earlier process; retrying them", released)
        for name, count in counts.items():
            backlog = self.backlogs.get(name)
            if backlog is None:
                if count.tasks and name:
                    logger.warning(
                        "%d tasks of queue %r are kept but not delivered: it is not configured",
                        count.tasks, name,
                    )  # fmt: skip
                continue
            backlog.tasks, backlog.bytes, backlog.dead = count.tasks, count.bytes, count.dead
        logger.info(
            "task store %s: %d tasks waiting, %d dead letters",
            self.settings.local.db,
            sum(b.tasks for b in self.backlogs.values()),
            sum(b.dead for b in self.backlogs.values()),
        )
        senders = await self._make_senders()
        for queue, sender in zip(self.settings.queues, senders, strict=True):
            self.dispatchers[queue.name] = self._dispatcher(queue, sender)
        for name in self.admin_store.paused_queues():
            if name in self.dispatchers:
                self.dispatchers[name].paused = True
                logger.info("queue %s is paused", name)
        self._register_metrics()
        for dispatcher in self.dispatchers.values():
            self._tasks.append(asyncio.create_task(dispatcher.run()))
        self._tasks.append(asyncio.create_task(self._prune_dedup()))
        self._started = True

    async def _make_senders(self) -> list[Sender]:
        """One sender per queue (in settings order): on ``local.delivery_processes``
        processes, queues dealt out in turn, or on this loop when that is 0."""
        queues = self.settings.queues
        count = min(self.settings.local.delivery_processes, len(queues))
        if count == 0:
            return [PoolSender(self._make_pool(queue)) for queue in queues]
        server = self.settings.server
        self._workers = [
            DeliveryWorker(
                [queue.concurrency for queue in queues[index::count]],
                log_level=server.log_level,
                log_format=server.log_format,
            )
            for index in range(count)
        ]
        for worker in self._workers:
            await worker.start()
        return [self._workers[n % count].sender(n // count) for n in range(len(queues))]

    def _make_pool(self, queue: QueueSettings) -> ConnectionPool:
        # One pool per queue, as large as its concurrency cap: a slow backend of one
        # queue cannot take the connections of another.
        if self._tls is None:
            self._tls = tls_context()  # one CA bundle in memory for every queue
        pool = ConnectionPool(queue.concurrency, self._tls)
        self._pools.append(pool)
        return pool

    def _dispatcher(self, queue: QueueSettings, sender: Sender) -> Dispatcher:
        backlog = self.backlogs[queue.name]

        def done(size: int, dead: bool) -> None:
            backlog.tasks -= 1
            backlog.bytes -= size
            if dead:
                backlog.dead += 1

        tokens = self._tokens_for(queue)
        return Dispatcher(
            queue,
            store=self.store,
            sender=sender,
            clock=self.clock,
            metrics=self.metrics,
            on_done=done,
            tokens=tokens,
        )

    def _tokens_for(self, queue: QueueSettings) -> Tokens | None:
        """The queue's token cache (shared by queues of the same kind, subject and
        identity), ``None`` when its deliveries carry no token."""
        kind: type[Tokens]
        if queue.oauth:
            kind, subject = AccessTokens, queue.oauth_scope
        elif queue.oidc:
            kind, subject = IdTokens, queue.oidc_audience
        else:
            return None
        key = (kind.kind, subject, queue.service_account_email)
        tokens = self._tokens.get(key)
        if tokens is None:
            iam_url = self.settings.local.iam_credentials_url
            tokens = kind(
                subject, queue.service_account_email, iam_url=iam_url, clock=self.clock.time
            )
            self._tokens[key] = tokens
        return tokens

    async def aclose(self) -> None:
        """Stop dispatching; give attempts in flight ``settings.server.shutdown_grace``
        seconds, release the leases of the rest; finish submitted writes; close the file."""
        if self._closing:
            return
        self._closing = True
        if not self._started:
            return
        grace = self.settings.server.shutdown_grace
        await stop_dispatching(self.dispatchers.values(), self._tasks, grace)
        for pool in self._pools:
            await pool.close()
        for worker in self._workers:
            await worker.aclose()
        await asyncio.to_thread(self.store.close)
        self._db_lock.release()

    # ------------------------------------------------------------ the Engine protocol

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        """Persist ``envelope`` durably (see the class docstring for the bounds); on the
        loop that started the engine, like every engine method but the admin API's."""
        return await self.enqueue_nowait(envelope)

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        """:meth:`enqueue` without a coroutine, for the ingress's direct path: a future of
        the result. What is refused before writing (stopped engine, unknown queue, full
        backlog) is raised at once."""
        if self._closing or not self._started:
            raise EngineUnavailableError("The engine is not running.", retry_after=1)
        backlog = self.backlogs.get(envelope.queue)
        if backlog is None:
            raise TaskRejectedError(
                f"No queue is named {envelope.queue!r}.", status=404, code="unknown_queue"
            )
        size = len(envelope.body)
        if backlog.tasks >= backlog.max_tasks or backlog.bytes + size > backlog.max_bytes:
            raise BacklogFullError(
                f"Queue {envelope.queue!r} holds {backlog.tasks} tasks "
                f"({backlog.bytes} bytes), its bound; retry later.",
                retry_after=self._retry_after(envelope.queue, backlog),
            )
        backlog.tasks += 1
        backlog.bytes += size
        future = self.store.enqueue(envelope, self._loop)

        def stored(future: asyncio.Future[EnqueueResult]) -> None:
            if future.cancelled() or future.exception() is not None or future.result().duplicate:
                backlog.tasks -= 1
                backlog.bytes -= size
            elif envelope.schedule_time is None or envelope.schedule_time <= self.clock.time():
                self.dispatchers[envelope.queue].notify()

        future.add_done_callback(stored)
        return future

    async def check_ready(self) -> None:
        """Raise :class:`EngineUnavailableError` unless a durable write succeeds now."""
        if self._closing or not self._started:
            raise EngineUnavailableError("The engine is not running.", retry_after=1)
        await self.store.probe()

    # ------------------------------------------------------------ internals

    def _adjust(self, queue: str, tasks: int, size: int, dead: int) -> None:
        # Counters belong to the engine's loop; the admin API may call from another one.
        backlog = self.backlogs[queue]

        def apply() -> None:
            backlog.tasks += tasks
            backlog.bytes += size
            backlog.dead += dead

        try:
            same_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            same_loop = False
        if same_loop or self._loop is None:
            apply()
        else:
            self._loop.call_soon_threadsafe(apply)

    def _queue_infos(self) -> list[QueueInfo]:
        now = self.clock.time()
        infos = []
        for queue in self.settings.queues:
            backlog = self.backlogs[queue.name]
            dispatcher = self.dispatchers[queue.name]
            first = self.store.oldest_received_at(queue.name)
            infos.append(
                QueueInfo(
                    name=queue.name,
                    state="paused" if dispatcher.paused else "running",
                    target=queue.target,
                    rate=queue.rate,
                    burst=queue.effective_burst,
                    concurrency=queue.concurrency,
                    current_rate=dispatcher.rate(),
                    tasks=backlog.tasks,
                    in_flight=len(dispatcher.in_flight),
                    oldest_age=max(0.0, now - first) if first is not None else None,
                    dead_letters=backlog.dead,
                )
            )
        return infos

    def _retry_after(self, queue: str, backlog: _Backlog) -> float:
        rate = self.dispatchers[queue].rate() if queue in self.dispatchers else 1.0
        excess_tasks = backlog.tasks - 0.9 * backlog.max_tasks
        if math.isfinite(backlog.max_bytes) and backlog.tasks:
            mean = backlog.bytes / backlog.tasks or 1.0
            excess_tasks = max(excess_tasks, (backlog.bytes - 0.9 * backlog.max_bytes) / mean)
        return min(MAX_RETRY_AFTER, max(1.0, excess_tasks / rate))

    def _register_metrics(self) -> None:
        m = self.metrics
        for name, backlog in self.backlogs.items():
            dispatcher = self.dispatchers[name]
            m.queue_depth.labels(name).set_function(backlog.depth)
            m.dead_letters.labels(name).set_function(backlog.dead_letters)
            m.dispatch_rate.labels(name).set_function(dispatcher.rate)
            m.oldest_task_age.labels(name).set_function(functools.partial(self._overdue, name))
            m.scheduled_tasks.labels(name).set_function(functools.partial(self._scheduled, name))

    def _overdue(self, queue: str) -> float:
        """Seconds the longest-due task of ``queue`` has been due (0: none is due); NaN when
        the store cannot be read."""
        if self._closing:
            return math.nan
        now = self.clock.time()
        try:
            due_at = self.store.oldest_due_at(queue, now)
        except EngineUnavailableError:
            return math.nan
        return 0.0 if due_at is None else max(0.0, now - due_at)

    def _scheduled(self, queue: str) -> float:
        """Tasks of ``queue`` not yet due; NaN when the store cannot be read."""
        if self._closing:
            return math.nan
        try:
            return float(self.store.scheduled_count(queue, self.clock.time()))
        except EngineUnavailableError:
            return math.nan

    async def _prune_dedup(self) -> None:
        while True:
            await self.clock.sleep(DEDUP_PRUNE_INTERVAL)
            try:
                await self.store.prune_dedup(self.clock.time())
            except EngineUnavailableError as exc:
                logger.warning("cannot prune idempotency keys: %s", exc)
