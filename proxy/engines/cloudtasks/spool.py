"""The Cloud Tasks engine's local spool (``cloudtasks.spool``): a request Cloud Tasks does
not take within the enqueue deadline, or while the breaker is open, is written durably to
a SQLite file and answered 202 with the task name it has in Cloud Tasks; the forwarder
(``forwarder.py``) creates it there once Cloud Tasks answers again.

- Only a 202 for a request that is in the file (committed with ``synchronous=FULL``) or
  in Cloud Tasks. A full spool (``spool_max_tasks``, ``spool_max_bytes``) or a disk error
  answers 503 with Retry-After, as without a spool.
- One name, one task: a repeated Idempotency-Key whose first copy is in the spool is a
  duplicate (the names of the spooled tasks are held in memory and unique in the file),
  and the forwarder counts ALREADY_EXISTS as done.
- Depth, bytes and the oldest entry are kept in memory (loaded on start), so the bound
  checks and the metrics cost no read.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

import grpc
from tenacity import RetryCallState

from proxy.config.settings import Settings
from proxy.engines.admin import Page
from proxy.engines.cloudtasks.breaker import STATE_VALUES, Breaker
from proxy.engines.cloudtasks.forwarder import Forwarder, Outcome
from proxy.engines.cloudtasks.request import QueueTarget, serialize
from proxy.engines.local.store.spool import NewSpoolEntry, SpoolEntry, SpoolStore
from proxy.engines.local.store.store import FAILURE_MEMORY
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import BadRequestError, EngineUnavailableError
from proxy.metrics import Metrics

SpoolReason = Literal["deadline", "breaker"]
RETRY_AFTER_MIN = 2.0  # seconds
RETRY_AFTER_MAX = 60.0


class _Kept:
    """What memory holds of one spooled entry."""

    __slots__ = ("id", "size", "spooled_at")

    def __init__(self, entry_id: int, size: int, spooled_at: float) -> None:
        self.id = entry_id
        self.size = size
        self.spooled_at = spooled_at


class Spool:
    """The spool of ``settings.cloudtasks.spool``; ``clock`` returns Unix seconds and
    ``monotonic`` the breaker's seconds."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        ct = settings.cloudtasks
        assert ct.spool is not None
        self.path = ct.spool
        self.max_tasks = ct.spool_max_tasks
        self.max_bytes = ct.spool_max_bytes
        self.forward_rate = ct.spool_forward_rate
        self.breaker = Breaker(
            failures=ct.spool_breaker_failures, open_for=ct.spool_breaker_open, clock=monotonic
        )
        self._clock = clock
        self._file = SpoolStore(self.path, clock=clock)
        self._kept: dict[str, _Kept] = {}  # by task name, in arrival order
        self._bytes = 0
        self._reserved_tasks = 0  # being written now
        self._reserved_bytes = 0
        self._forwarder: Forwarder | None = None
        self._spooled = metrics.spooled
        self._forwarded = metrics.spool_forwarded
        metrics.spool_tasks.set_function(lambda: len(self._kept))
        metrics.spool_bytes.set_function(lambda: self._bytes)
        metrics.spool_oldest_age.set_function(self.oldest_age)
        metrics.spool_breaker_state.set_function(lambda: STATE_VALUES[self.breaker.state])

    # ------------------------------------------------------------ lifecycle

    async def start(
        self,
        create_task: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        targets: dict[str, QueueTarget],
    ) -> None:
        """Open the file (entries of an earlier run are forwarded first) and start the
        forwarder on the running loop; ``create_task`` takes serialized requests."""
        entries = await asyncio.to_thread(self._file.open)
        for entry in entries:
            self._keep(entry)
        metadata = {name: target.metadata for name, target in targets.items()}
        self._forwarder = Forwarder(
            self, create_task, metadata, self.breaker, rate=self.forward_rate
        )
        self._forwarder.start()

    async def aclose(self) -> None:
        """Stop forwarding and close the file; what is spooled stays for the next start."""
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            await forwarder.stop()
        await asyncio.to_thread(self._file.close)

    # ------------------------------------------------------------ the request path

    def goes_first(self, envelope: Envelope, name: str) -> bool:
        """Whether the request goes to the spool without a CreateTask: its Idempotency-Key
        names a spooled task (a duplicate), or the breaker is open. May take the
        half-open breaker's probe: then the caller's CreateTask must report to it."""
        if envelope.idempotency_key is not None and name in self._kept:
            return True
        return not self.breaker.allow()

    def stop_retrying(
        self, stop: Callable[[RetryCallState], bool]
    ) -> Callable[[RetryCallState], bool]:
        """``stop``, or as soon as the breaker opens: the request is spooled at once."""

        def check(state: RetryCallState) -> bool:
            return stop(state) or self.breaker.state == "open"

        return check

    async def admit(
        self, envelope: Envelope, target: QueueTarget, request: Any, reason: SpoolReason
    ) -> EnqueueResult:
        """Keep ``request`` (the raw CreateTask message of ``envelope``); return once it is
        durable. Raises :class:`EngineUnavailableError` when the spool is full or cannot
        write: nothing is kept then."""
        name = target.task_name(envelope.id)
        if name in self._kept:
            return EnqueueResult(envelope.id, envelope.queue, duplicate=True)
        data = serialize(request)
        self._check_room(len(data))
        self._reserved_tasks += 1
        self._reserved_bytes += len(data)
        try:
            stored = await self._file.add(
                NewSpoolEntry(name, envelope.queue, data, envelope.received_at)
            )
        finally:
            self._reserved_tasks -= 1
            self._reserved_bytes -= len(data)
        if stored is None:  # the same name came in twice at once
            return EnqueueResult(envelope.id, envelope.queue, duplicate=True)
        self._keep(stored)
        self._spooled.labels(reason).inc()
        if self._forwarder is not None:
            self._forwarder.wake()
        return EnqueueResult(envelope.id, envelope.queue)

    def _check_room(self, size: int) -> None:
        tasks = len(self._kept) + self._reserved_tasks
        size_after = self._bytes + self._reserved_bytes + size
        if tasks < self.max_tasks and size_after <= self.max_bytes:
            return
        retry_after = min(RETRY_AFTER_MAX, max(RETRY_AFTER_MIN, tasks / self.forward_rate))
        raise EngineUnavailableError(
            f"Cloud Tasks did not take the task in time and the local spool is full ({tasks}"
            f" tasks, {self._bytes + self._reserved_bytes} bytes); nothing was stored, retry"
            " later.",
            retry_after=retry_after,
        )

    def accepting(self) -> bool:
        """Whether a request would be spooled now: room left, and no failed write to the
        file in the last few seconds."""
        failure = self._file.last_failure
        if failure is not None and time.monotonic() - failure[0] < FAILURE_MEMORY:
            return False
        return len(self._kept) < self.max_tasks and self._bytes < self.max_bytes

    # ------------------------------------------------------------ what the forwarder asks

    async def next_entries(self, limit: int, after: int) -> list[SpoolEntry]:
        """Up to ``limit`` entries after the id ``after``, requests included."""
        return await self._file.page(limit, after, requests=True)

    async def forwarded(self, done: list[tuple[SpoolEntry, Outcome]]) -> None:
        """Remove entries Cloud Tasks holds now."""
        await self._file.remove([entry.id for entry, _ in done])
        for entry, outcome in done:
            kept = self._kept.pop(entry.name, None)
            if kept is not None:
                self._bytes -= kept.size
            self._forwarded.labels(outcome).inc()

    async def attempt_failed(self, entry: SpoolEntry, error: str) -> None:
        """Count a failed attempt of ``entry`` in the file (the admin API shows it)."""
        await self._file.note_failure(entry.id, error)

    # ------------------------------------------------------------ reads

    def depth(self) -> int:
        """Entries in the spool."""
        return len(self._kept)

    def size(self) -> int:
        """Bytes of the spooled requests."""
        return self._bytes

    def breaker_state(self) -> str:
        """``closed``, ``half_open`` or ``open``."""
        return self.breaker.state

    def oldest_age(self) -> float:
        """Seconds the oldest entry has been in the spool; 0 when it is empty."""
        for kept in self._kept.values():
            return max(0.0, self._clock() - kept.spooled_at)
        return 0.0

    async def list_entries(self, *, limit: int, cursor: str | None) -> Page[SpoolEntry]:
        """One page of the spool in arrival order (without the requests)."""
        if cursor is not None and not cursor.isdigit():
            raise BadRequestError("cursor is not one this API handed out.")
        entries = await self._file.page(limit, int(cursor or 0))
        next_cursor = str(entries[-1].id) if len(entries) == limit else None
        return Page(entries, next_cursor)

    def _keep(self, entry: SpoolEntry) -> None:
        self._kept[entry.name] = _Kept(entry.id, entry.size, entry.spooled_at)
        self._bytes += entry.size
