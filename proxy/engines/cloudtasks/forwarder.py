"""The forwarder: one asyncio task that drains the spool into Cloud Tasks.

Entries go in arrival order, one CreateTask at a time, at most ``rate`` a second, each
with the exact request (and so the task name) it was spooled with. OK and ALREADY_EXISTS
(an earlier CreateTask of that name had landed) both mean Cloud Tasks holds the task;
only then is the entry removed. A transient failure counts against the breaker and
waits a jittered, exponentially growing pause before the same entry is tried again; so
does a set-up failure (missing queue, denied identity), which a person has to fix. An
entry Cloud Tasks refuses as invalid can never be created: it is left in the spool with
its error (the admin API shows it) and passed over until the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any, Literal, Protocol

import grpc
from google.api_core import exceptions as core_exceptions

from proxy.engines.cloudtasks.breaker import Breaker
from proxy.engines.cloudtasks.errors import TRANSIENT, code_name, from_rpc_error, grpc_code
from proxy.engines.local.store.spool import SpoolEntry

logger = logging.getLogger("ingest_proxy.cloudtasks")

Outcome = Literal["created", "already_existed"]
BATCH = 50  # entries read from the file at a time
FORWARD_TIMEOUT = 10.0  # seconds per CreateTask
BACKOFF_MIN = 0.5  # seconds, the first pause after a failure
BACKOFF_MAX = 30.0  # seconds, the longest
_LOG_EVERY = 10.0  # seconds between two warnings


class SpoolQueue(Protocol):
    """What the forwarder needs of the spool."""

    async def next_entries(self, limit: int, after: int) -> list[SpoolEntry]:
        """Up to ``limit`` entries after the id ``after``, requests included."""
        ...

    async def forwarded(self, done: list[tuple[SpoolEntry, Outcome]]) -> None:
        """Remove these entries: Cloud Tasks holds them."""
        ...

    async def attempt_failed(self, entry: SpoolEntry, error: str) -> None:
        """Count a failed attempt of ``entry``."""
        ...


class Forwarder:
    """Drains ``spool`` through ``create_task`` (a CreateTask call taking the serialized
    request); ``metadata`` holds each queue's routing headers; ``rate`` is in CreateTasks
    per second; ``jitter`` returns a number in [0, 1)."""

    def __init__(
        self,
        spool: SpoolQueue,
        create_task: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes],
        metadata: dict[str, tuple[tuple[str, str], ...]],
        breaker: Breaker,
        *,
        rate: float,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._spool = spool
        self._create_task = create_task
        self._metadata = metadata
        self._breaker = breaker
        self._interval = 1.0 / rate
        self._jitter = jitter
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._passed_over: set[int] = set()  # refused as invalid: not tried again
        self._failures = 0  # in a row, for the backoff
        self._next_at = 0.0  # loop time the next CreateTask may start
        self._logged_at: dict[str, float] = {}

    def start(self) -> None:
        """Run on the current loop (entries already in the file go first)."""
        self._wake.set()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="spool-forwarder")

    def wake(self) -> None:
        """A new entry is in the spool."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop; a CreateTask in flight is cancelled (its entry stays and is sent again)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._drain()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A disk error reading or updating the spool: the entries stay; try again.
                logger.exception("forwarding the spool failed; retrying")
                self._wake.set()
                await asyncio.sleep(self._backoff())

    async def _drain(self) -> None:
        """Forward until the spool holds nothing but entries passed over."""
        after = 0  # the last entry handled in this pass; a failed one is tried again
        while True:
            wait = self._breaker.closes_in()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if not self._breaker.allow():  # a request is the probe; wait for its answer
                await asyncio.sleep(self._interval)
                continue
            batch = await self._spool.next_entries(BATCH, after)
            if not batch:
                return
            done: list[tuple[SpoolEntry, Outcome]] = []
            failed = False
            for entry in batch:
                if entry.id not in self._passed_over:
                    await self._pace()
                    outcome = await self._forward(entry)
                    if outcome is None:
                        failed = True
                        break
                    if outcome != "passed_over":
                        done.append((entry, outcome))
                after = entry.id
            if done:
                await self._spool.forwarded(done)
            if failed:
                await asyncio.sleep(self._backoff())

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._next_at > now:
            await asyncio.sleep(self._next_at - now)
            now = loop.time()
        self._next_at = max(now, self._next_at) + self._interval

    def _backoff(self) -> float:
        """Seconds to wait after the latest failure: doubling from BACKOFF_MIN up to
        BACKOFF_MAX, each between half of that and all of it."""
        self._failures += 1
        ceiling = min(BACKOFF_MAX, BACKOFF_MIN * 2.0 ** min(self._failures - 1, 16))
        return ceiling * (0.5 + 0.5 * self._jitter())

    async def _forward(self, entry: SpoolEntry) -> Outcome | Literal["passed_over"] | None:
        """CreateTask for ``entry``: its outcome, ``passed_over`` when it can never be
        created, ``None`` after a failure worth another attempt later."""
        metadata = self._metadata.get(entry.queue)
        if metadata is None:
            self._pass_over(entry, f"queue {entry.queue!r} is no longer configured")
            await self._spool.attempt_failed(entry, "the queue is no longer configured")
            return "passed_over"
        try:
            await self._create_task(entry.request, timeout=FORWARD_TIMEOUT, metadata=metadata)
        except grpc.RpcError as rpc_error:
            exc = from_rpc_error(rpc_error)
            if isinstance(exc, core_exceptions.AlreadyExists):
                return self._accepted("already_existed")
            return await self._failed(entry, exc)
        return self._accepted("created")

    def _accepted(self, outcome: Outcome) -> Outcome:
        self._breaker.success()
        self._failures = 0
        return outcome

    async def _failed(
        self, entry: SpoolEntry, exc: core_exceptions.GoogleAPICallError
    ) -> Literal["passed_over"] | None:
        code = grpc_code(exc)
        error = f"{code_name(exc)}: {exc.message}"
        await self._spool.attempt_failed(entry, error)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            self._pass_over(entry, error)
            return "passed_over"
        if code in TRANSIENT:
            self._breaker.failure()
        self._log(code_name(exc), "forwarding %s from the spool failed: %s", entry.name, error)
        return None

    def _pass_over(self, entry: SpoolEntry, why: str) -> None:
        self._passed_over.add(entry.id)
        logger.error(
            "spooled task %s cannot be created (%s); it stays in the spool", entry.name, why
        )

    def _log(self, key: str, message: str, *args: Any) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._logged_at.get(key, float("-inf")) >= _LOG_EVERY:
            self._logged_at[key] = now
            logger.warning(message, *args)
