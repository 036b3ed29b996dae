"""Per-queue scheduling: take due tasks in ETA order within the token bucket and the
concurrency cap, deliver them, and record the outcome with Cloud Tasks retry semantics.

What the backend and the operator can rely on:

- Each attempt is the request Cloud Tasks would send (``proxy.engines.delivery``), with
  ``X-CloudTasks-TaskRetryCount`` (earlier attempts), ``-TaskExecutionCount`` (earlier
  answers that were not 5xx), ``-TaskETA``, and on a retry after an answer
  ``-TaskPreviousResponse`` and an empty ``-TaskRetryReason``.
- A 2xx completes the task. Redirects are **not** followed: a 3xx is a failed attempt
  (following it would send the body somewhere the operator did not configure).
- Anything else, a transport error, or no answer within ``dispatch_deadline`` is retried
  after ``backoff_delay`` (RetryConfig exactly). A ``Retry-After`` on a 429/503 is honoured
  exactly: the next attempt of that task is not before it (or the backoff, if longer).
- Going further than Cloud Tasks: each 429/503 also halves the queue's rate (a burst of
  them counts once per second, floor 1/32 of the rate), held for 5 s or the Retry-After,
  then doubled back every 5 s; ``ingest_proxy_dispatch_rate`` shows the current rate.
- When ``should_retry`` says no, the task moves to the dead-letter table with its last
  status and up to 1 KiB of the answer, instead of being deleted.
- Delivery is at least once: a lease lives in this dispatcher's memory (the tasks its
  attempts hold are skipped by the next lease; nothing is written), so an attempt whose
  outcome was not recorded is retried by the next process after a crash, or by this one
  after a store error. A success is recorded lazily (with the others of about 0.1 s); a
  refused one keeps its task held and is tried again every ``COMPLETE_RETRY`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Callable
from functools import partial
from itertools import chain

from proxy.config.settings import QueueSettings
from proxy.engines.delivery import OutgoingRequest, build_request, cloud_tasks_headers
from proxy.engines.local import attempt
from proxy.engines.local.bucket import Throttle, TokenBucket
from proxy.engines.local.clock import Clock
from proxy.engines.local.store.store import AttemptResult, LeasedTask, Store
from proxy.engines.recording import AttemptRecorder
from proxy.engines.retry import DONE, GIVE_UP, decide
from proxy.engines.tokens import TokenError, Tokens
from proxy.errors import EngineError
from proxy.metrics import Metrics

logger = logging.getLogger("ingest_proxy.local")

LEASE_BATCH = 100  # tasks taken per store round trip at most
# A queue running at its rate limit leases what the bucket earns in this many seconds at
# once, not each token as it comes: at 500/s, 25 tasks every 50 ms instead of one every
# 2 ms. Each round costs a lease transaction, a scheduler wake-up and wake-ups of the
# delivery process, whatever its size: at 500/s a delivery cost CPU 0 ~360 us with
# rounds of 20 ms and ~250 us with rounds of 50 ms (bench/README.md, round 4). The rate
# and the burst hold exactly as before (a round never takes more than the bucket holds);
# a lone task on an idle queue (a full bucket) still goes at once.
LEASE_PERIOD = 0.05
LEASE_MARGIN = 30.0  # seconds a lease outlives the dispatch deadline
MAX_IDLE = 1.0  # seconds between looks at the store when nothing seems due
COMPLETE_RETRY = 1.0  # seconds before a completion the store refused is tried again


class Dispatcher:
    """Delivers the tasks of one queue. Drive it with :meth:`run` (real time) or call
    :meth:`step` yourself (tests with a :class:`~proxy.engines.local.clock.ManualClock`).

    ``on_done(size, dead)`` is called when a task leaves the queue (``size`` in body bytes).
    """

    def __init__(
        self,
        queue: QueueSettings,
        *,
        store: Store,
        sender: attempt.Sender,
        clock: Clock,
        metrics: Metrics,
        on_done: Callable[[int, bool], None] = lambda size, dead: None,
        tokens: Tokens | None = None,
    ) -> None:
        self.queue = queue
        self.tokens = tokens
        self.store = store
        self.sender = sender
        self.clock = clock
        self.on_done = on_done
        self.bucket = TokenBucket(queue.rate, queue.effective_burst, clock.monotonic())
        self.throttle = Throttle()
        self.in_flight: dict[int, asyncio.Task[None]] = {}
        # Completions not yet committed, and their task's seq: held like attempts in flight
        self._completing: dict[asyncio.Future[bool], int] = {}
        self._retrying: dict[int, asyncio.TimerHandle] = {}  # completions to try again
        self._sleeper: asyncio.Future[None] | None = None  # while run() sleeps
        self._woken = False  # woken while awake: the next sleep returns at once
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._idle = False
        self._capped = False  # the last step found no free slot: a finished attempt wakes it
        self._stopping = False
        self.paused = False  # set by the admin API: no new attempts, tasks still accepted
        self._recorder = AttemptRecorder(metrics, queue.name)
        self._dispatches = self._recorder.dispatches
        self._delivery_seconds = self._recorder.delivery_seconds
        self._task_attempts = self._recorder.task_attempts

    # ------------------------------------------------------------ scheduling

    def rate(self) -> float:
        """Current dispatches per second: the configured rate, lowered after 429/503."""
        return self.queue.rate * self.throttle.factor(self.clock.monotonic())

    def set_paused(self, paused: bool) -> None:
        """Pause or resume dispatching (attempts in flight finish either way)."""
        self.paused = paused
        self._poke()

    def notify(self) -> None:
        """New tasks are due: look at the store now if the dispatcher is idle."""
        if self._idle:
            self._poke()

    def _poke(self) -> None:
        # The admin API may run on another event loop, in another thread. (Comparing
        # threads costs no system call; asyncio.get_running_loop() makes one.)
        if threading.get_ident() == self._loop_thread:
            self._wake_up()
        else:
            self._loop.call_soon_threadsafe(self._wake_up)

    def _wake_up(self) -> None:
        sleeper = self._sleeper
        if sleeper is not None and not sleeper.done():
            sleeper.set_result(None)
        else:
            self._woken = True

    async def step(self) -> float:
        """One scheduling round: lease as many due tasks as tokens and free slots allow
        and start their attempts. Returns seconds until another round is worth it."""
        mono = self.clock.monotonic()
        rate = self.rate()
        if rate != self.bucket.rate:
            self.bucket.set_rate(rate, mono)
        if self.paused:
            self._idle = False
            return MAX_IDLE  # resume() wakes us
        free = self.queue.concurrency - len(self.in_flight)
        self._capped = free <= 0
        if free <= 0:
            self._idle = False
            return MAX_IDLE  # a finishing attempt wakes us earlier
        wait = self.bucket.wait_time(mono, min(free, math.ceil(rate * LEASE_PERIOD)))
        if wait > 0:
            self._idle = False
            return wait
        limit = min(free, max(1, int(self.bucket.available(mono) + 1e-9)), LEASE_BATCH)
        now = self.clock.time()
        # Idle from here on: a notify() that arrives while the lease query runs must wake
        # the next sleep, or a task enqueued meanwhile waits for the next due time.
        self._idle = True
        held = frozenset(chain(self.in_flight, self._completing.values(), self._retrying))
        lease = await self.store.lease(self.queue.name, now, limit, held, loop=self._loop)
        for task in lease.tasks:
            self.bucket.try_take(self.clock.monotonic())
            # loop.create_task: asyncio.create_task asks for the running loop, a getpid()
            # system call each time.
            self.in_flight[task.seq] = self._loop.create_task(self._deliver(task))
        if len(lease.tasks) < limit:
            self._idle = True
            if lease.next_due is None:
                return MAX_IDLE
            return min(MAX_IDLE, max(0.0, lease.next_due - self.clock.time()))
        self._idle = False
        return 0.0

    async def run(self) -> None:
        """Schedule until :meth:`stop`; store errors are logged and retried."""
        while not self._stopping:
            try:
                delay = await self.step()
            except EngineError as exc:
                logger.warning("queue %s: cannot lease tasks: %s", self.queue.name, exc)
                delay = MAX_IDLE
            except Exception:
                logger.exception("queue %s: scheduling failed", self.queue.name)
                delay = MAX_IDLE
            if delay > 0 and not self._stopping:
                await self._sleep(delay)

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` or until woken: one future and one timer (this runs once or
        twice per lease, so two tasks and ``asyncio.wait`` were a measurable cost)."""
        if self._woken:
            self._woken = False
            return
        sleeper: asyncio.Future[None] = self._loop.create_future()
        self._sleeper = sleeper
        timer = self.clock.call_later(self._loop, seconds, partial(_resolve, sleeper))
        try:
            await sleeper
        finally:
            timer.cancel()
            self._sleeper = None
            self._woken = False

    def stop(self) -> None:
        """Take no more tasks (attempts in flight go on)."""
        self._stopping = True
        self._wake_up()

    async def drain(self, grace: float) -> list[int]:
        """Wait up to ``grace`` seconds for attempts in flight (and the completions of
        finished ones), cancel the rest; return the ids (``seq``) of the cancelled tasks
        (due again at once: their leases were only this dispatcher's)."""
        pending = set(self.in_flight.values())
        if pending:
            await asyncio.wait(pending, timeout=grace)
        cancelled = {seq: task for seq, task in self.in_flight.items() if not task.done()}
        for task in cancelled.values():
            task.cancel()
        for task in cancelled.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.completions()
        for timer in self._retrying.values():
            timer.cancel()  # unrecorded: delivered again at the next start
        self._retrying.clear()
        return list(cancelled)

    async def completions(self) -> None:
        """Wait until the completions of the attempts that succeeded so far are committed
        (or failed): they are lazy writes, done within the writer's
        ``BOOKKEEPING_GATHER_SECONDS`` and a commit."""
        if self._completing:
            await asyncio.wait(set(self._completing))

    # ------------------------------------------------------------ delivery

    async def _deliver(self, task: LeasedTask) -> None:
        completed: bool | None = False
        try:
            completed = await self._attempt(task)
        except EngineError as exc:
            self._unrecorded(task, exc)  # no longer held: the task is due again
        except Exception:
            logger.exception("queue %s: attempt of %s failed", self.queue.name, task.envelope.id)
        finally:
            self.in_flight.pop(task.seq, None)
            # A retry may be due before the scheduler's next look, and a capped queue has
            # a free slot now; a completed task changes neither.
            if self._capped or not completed:
                self._capped = False
                self._wake_up()

    async def _attempt(self, task: LeasedTask) -> bool | None:
        """One attempt of ``task`` and its record; True when it completed the task,
        ``None`` when the task was gone before the attempt."""
        started = self.clock.time()
        try:
            prepared = await self.prepare(task)
        except TokenError as exc:  # nothing was sent: a failed attempt all the same
            return await self.conclude(task, attempt.Outcome(None, "auth", str(exc)), started, 0.0)
        if prepared is None:
            return None
        request, deadline = prepared
        return await self.deliver(task, request, deadline)

    # ------------------------------------------------------------ the attempt's parts
    # A dispatcher of other tasks (the local Cloud Tasks server's) overrides these four:
    # how a task becomes a request, and how each outcome is recorded. The sequence, the
    # metrics, the log line and the retry decision stay here (``deliver``).

    GIVE_UP_RESULT = "dead_letter"  # the log's ``result`` when a task is out of retries
    GIVE_UP_LEVEL = logging.WARNING

    async def prepare(self, task: LeasedTask) -> tuple[OutgoingRequest, float] | None:
        """The request an attempt of ``task`` sends and its deadline (seconds), or
        ``None`` when the task is gone."""
        queue = self.queue
        request = build_request(queue, task.envelope)
        request.headers.update(self.attempt_headers(task, queue.name))
        if self.tokens is not None:
            # Cloud Tasks puts its token in Authorization, whatever the task carried (the
            # ingress gives header names in lower case, so this one replaces the task's).
            request.headers["authorization"] = "Bearer " + await self.tokens.token()
        return request, queue.dispatch_deadline

    @staticmethod
    def attempt_headers(task: LeasedTask, queue_id: str) -> dict[str, str]:
        """The ``X-CloudTasks-*`` headers of the next attempt of ``task`` in the queue
        whose short id is ``queue_id``."""
        return cloud_tasks_headers(
            queue=queue_id,
            task=task.envelope.id,
            retry_count=task.attempts,
            execution_count=task.responses,
            eta=task.eta,
            previous_response=task.last_status if task.attempts else None,
        )

    async def record_success(self, task: LeasedTask) -> None:
        """``task``'s attempt succeeded: delete it. Lazily: the slot is free once the
        answer is in; the task stays held (not leased again) until its completion
        commits, with the others of ~0.1 s."""
        self._complete(task)

    async def record_retry(
        self,
        task: LeasedTask,
        outcome: attempt.Outcome,
        result: AttemptResult,
        now: float,
        eta: float,
    ) -> None:
        """``task``'s attempt failed at ``now``: its next one is due at ``eta`` (Unix
        seconds)."""
        await self.store.retry(task, result, eta)

    async def record_give_up(
        self, task: LeasedTask, outcome: attempt.Outcome, result: AttemptResult, now: float
    ) -> None:
        """``task`` failed its last attempt: it becomes a dead letter."""
        if await self.store.dead_letter(task, result, now):
            self.on_done(task.size, True)

    async def deliver(self, task: LeasedTask, request: OutgoingRequest, deadline: float) -> bool:
        """Send ``request`` for ``task`` within ``deadline`` seconds, count and log the
        attempt, and record what :func:`~proxy.engines.retry.decide` makes of it; True
        when the task is done."""
        started = self.clock.time()
        started_mono = self.clock.monotonic()
        outcome = await self.sender.send(request, deadline=deadline, now=started)
        latency = self.clock.monotonic() - started_mono
        self._delivery_seconds.observe(latency)
        return await self.conclude(task, outcome, started, latency)

    async def conclude(
        self, task: LeasedTask, outcome: attempt.Outcome, started: float, latency: float
    ) -> bool:
        """Count and log the attempt of ``task`` that started at ``started`` (Unix seconds)
        and ended as ``outcome`` after ``latency`` seconds, and record what
        :func:`~proxy.engines.retry.decide` makes of it; True when the task is done."""
        self._dispatches[outcome.kind].inc()
        if self.tokens is not None and outcome.error:
            outcome.error = self.tokens.redact(outcome.error)
        attempts = task.attempts + 1
        now = self.clock.time()
        first = task.first_attempt_at if task.first_attempt_at is not None else started
        decision = decide(
            self.queue.retry,
            success=outcome.success,
            retry_after=outcome.retry_after,
            attempts=attempts,
            first_attempt_at=first,
            now=now,
        )
        if decision is DONE:
            await self.record_success(task)
            self._task_attempts.observe(attempts)
            self._log(task, outcome, attempts, latency, "done")
            return True
        if outcome.throttles:
            self.throttle.throttled(self.clock.monotonic(), outcome.retry_after)
        result = AttemptResult(started, outcome.status, outcome.executed, outcome.error)
        if decision is GIVE_UP:
            await self.record_give_up(task, outcome, result, now)
            self._task_attempts.observe(attempts)
            self._log(
                task, outcome, attempts, latency, self.GIVE_UP_RESULT, level=self.GIVE_UP_LEVEL
            )
            return False
        await self.record_retry(task, outcome, result, now, now + decision.delay)
        self._log(task, outcome, attempts, latency, "retry", retry_in=round(decision.delay, 3))
        return False

    def _complete(self, task: LeasedTask) -> None:
        """Delete ``task`` (its attempt succeeded), lazily; it stays held until then."""
        try:
            completion = self.store.complete(task, loop=self._loop)
        except EngineError as exc:  # the store is closed: delivered again at the next start
            self._unrecorded(task, exc)
            return
        self._completing[completion] = task.seq
        completion.add_done_callback(partial(self._completed, task))

    def _completed(self, task: LeasedTask, completion: asyncio.Future[bool]) -> None:
        self._completing.pop(completion, None)
        if completion.cancelled():
            return
        error = completion.exception()
        if error is None:
            if completion.result():
                self.on_done(task.size, False)
            return
        self._unrecorded(task, error)
        if not self._stopping:
            # Held meanwhile, so it is not delivered again while this process runs (it
            # is, at the next start, if the store never recovers).
            self._retrying[task.seq] = self._loop.call_later(
                COMPLETE_RETRY, self._retry_complete, task
            )

    def _retry_complete(self, task: LeasedTask) -> None:
        del self._retrying[task.seq]
        self._complete(task)

    def _unrecorded(self, task: LeasedTask, error: BaseException) -> None:
        logger.warning(
            "queue %s: cannot record the attempt of %s: %s",
            self.queue.name, task.envelope.id, error,
        )  # fmt: skip

    def _log(
        self,
        task: LeasedTask,
        outcome: attempt.Outcome,
        attempts: int,
        latency: float,
        result: str,
        *,
        level: int = logging.INFO,
        **extra: object,
    ) -> None:
        """One line per attempt (proxy/engines/recording.py)."""
        envelope = task.envelope
        self._recorder.log(
            envelope.id, envelope.request_id, outcome, attempts, latency, result,
            level=level, **extra,
        )  # fmt: skip


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
