"""Cloud Tasks engine: every Envelope becomes one named HTTP task (``CreateTask``) before
the client gets its 202; Cloud Tasks itself then delivers it.

- ``ALREADY_EXISTS`` on a retry of our own call is success (the earlier attempt got
  through); on the first attempt of a task with an Idempotency-Key it is a duplicate.
- Transient codes and connection failures are retried (jittered exponential backoff), all
  attempts bounded by ``cloudtasks.enqueue_deadline``; then 503 + Retry-After. Nothing
  answers 202 unless CreateTask returned OK.
- Every other failure becomes a proxy error in ``errors.py``, the engine's one error
  boundary.
- With ``cloudtasks.spool`` set, a request that ran out of transient retries, or comes
  while the breaker is open, is kept in the local spool instead (``spool.py``) and
  answered 202 with the same task name; the forwarder creates it later.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2 import CloudTasksAsyncClient, Queue
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from proxy.config.settings import Settings
from proxy.engines.cloudtasks.admin import CloudTasksAdmin
from proxy.engines.cloudtasks.channel import make_client, make_create_task_channel
from proxy.engines.cloudtasks.errors import (
    RETRY_AFTER_SETUP,
    RETRY_AFTER_TRANSIENT,
    TRANSIENT,
    code_name,
    create_task_error,
    from_rpc_error,
    gave_up,
    grpc_code,
    retry_after,
)
from proxy.engines.cloudtasks.request import (
    CREATE_TASK_METHOD,
    QueueTarget,
    create_task_message,
    queue_targets,
    serialize,
)
from proxy.engines.cloudtasks.spool import Spool
from proxy.envelope import EnqueueResult, Envelope
from proxy.errors import EngineUnavailableError, ProxyError, TaskRejectedError
from proxy.metrics import Metrics

__all__ = ["CloudTasksEngine", "make_client"]

logger = logging.getLogger("ingest_proxy.cloudtasks")

READY_TIMEOUT = 1.0  # seconds per GetQueue probe
READY_CACHE = 1.5  # seconds a readiness answer is reused
MIN_ATTEMPT = 0.05  # seconds: no attempt starts with less budget than this
_LOG_EVERY = 10.0  # seconds between two warnings about the same failure
_WAIT = wait_random_exponential(multiplier=0.05, max=0.5)


class _TransientError(Exception):
    """A failure worth another attempt; carries the library error it came from."""

    def __init__(self, error: core_exceptions.GoogleAPICallError) -> None:
        super().__init__(str(error))
        self.error = error


class _Attempts:
    """Per-request state shared by the attempts of one enqueue."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


class CloudTasksEngine(CloudTasksAdmin):
    """Persist each Envelope as a Cloud Tasks HTTP task; Cloud Tasks delivers it.

    One :class:`CloudTasksAsyncClient` per engine (readiness probes), opened in
    :meth:`start` and closed in :meth:`aclose`, and beside it a bare channel for CreateTask
    (see :func:`make_create_task_channel`). Each task is named
    ``<queue path>/tasks/<envelope.id>``, so a retried CreateTask never stores a request
    twice.
    """

    name = "cloudtasks"

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self._settings = settings
        self._budget = settings.cloudtasks.enqueue_deadline
        self._targets = queue_targets(settings)
        self._rpc_errors = metrics.cloudtasks_rpc_errors
        self._client: CloudTasksAsyncClient | None = None
        self._channel: grpc.aio.Channel | None = None
        self._create_task: grpc.aio.UnaryUnaryMultiCallable[Any, bytes] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready_lock: asyncio.Lock | None = None
        self._ready_checked_at = float("-inf")
        self._ready_problem: tuple[str, float] | None = None
        self._logged_at: dict[str, float] = {}
        self.spool = Spool(settings, metrics) if settings.cloudtasks.spool else None

    async def start(self) -> None:
        """Open the gRPC channels (inside the running loop)."""
        self._loop = asyncio.get_running_loop()
        settings = self._settings.cloudtasks
        self._client = make_client(settings)
        self._channel = make_create_task_channel(settings, self._client.transport.host)
        self._create_task = self._channel.unary_unary(
            CREATE_TASK_METHOD, request_serializer=serialize, response_deserializer=None
        )
        self._ready_lock = asyncio.Lock()
        if self.spool is not None:
            # The spooled requests are serialized already: no serializer on this one.
            await self.spool.start(self._channel.unary_unary(CREATE_TASK_METHOD), self._targets)

    @property
    def endpoint(self) -> str:
        """Where calls go: the emulator's ``host:port``, or Google's endpoint once started."""
        emulator = self._settings.cloudtasks.emulator_host
        if emulator:
            return emulator
        host: str = self._started_client().transport.host
        return host

    async def aclose(self) -> None:
        """Close the channels; calls in flight are cancelled."""
        if self.spool is not None:
            await self.spool.aclose()
        client, self._client = self._client, None
        channel, self._channel, self._create_task = self._channel, None, None
        if channel is not None:
            await channel.close()
        if client is not None:
            close: Callable[[], Awaitable[None]] = client.transport.close
            await close()

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        """CreateTask for ``envelope``; return once Cloud Tasks has stored it.

        Transient failures are retried within ``cloudtasks.enqueue_deadline`` seconds, each
        attempt bounded by what is left of it. Raises :class:`EngineUnavailableError` or
        :class:`TaskRejectedError`; nothing is stored when it raises.
        """
        create_task = self._create_task
        if create_task is None:
            raise EngineUnavailableError("The Cloud Tasks engine is not running.", retry_after=1)
        target = self._targets.get(envelope.queue)
        if target is None:
            raise TaskRejectedError(
                f"No queue is named {envelope.queue!r}.", status=404, code="unknown_queue"
            )
        request = create_task_message(target, envelope)
        spool = self.spool
        if spool is not None and spool.goes_first(envelope, target.task_name(envelope.id)):
            return await spool.admit(envelope, target, request, "breaker")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._budget
        attempts = _Attempts()
        try:
            # The first attempt runs outside tenacity: it is the common case, and setting
            # up a retry loop costs more than the proxy's own per-request work.
            return await self._create(create_task, request, envelope, target, deadline, attempts)
        except _TransientError as exc:
            failed = [exc]

        async def retry() -> EnqueueResult:
            if failed:  # replay the first failure so tenacity waits before attempt two
                raise failed.pop()
            return await self._create(create_task, request, envelope, target, deadline, attempts)

        stop = _stop_at(loop, deadline)
        retrying = AsyncRetrying(
            stop=stop if spool is None else spool.stop_retrying(stop),
            wait=_WAIT,
            retry=retry_if_exception_type(_TransientError),
            reraise=True,
        )
        try:
            result: EnqueueResult = await retrying(retry)
        except _TransientError as exc:
            error = self._gave_up(exc.error, target)
            if spool is None:
                raise error from None
            return await spool.admit(envelope, target, request, "deadline")
        return result

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        """:meth:`enqueue` as a task on the running loop (a CreateTask is a coroutine)."""
        return asyncio.get_running_loop().create_task(self.enqueue(envelope))

    async def _create(
        self,
        create_task: grpc.aio.UnaryUnaryMultiCallable[Any, bytes],
        request: Any,
        envelope: Envelope,
        target: QueueTarget,
        deadline: float,
        attempts: _Attempts,
    ) -> EnqueueResult:
        attempts.count += 1
        timeout = max(deadline - asyncio.get_running_loop().time(), MIN_ATTEMPT)
        try:
            await create_task(request, timeout=timeout, metadata=target.metadata)
        except grpc.RpcError as rpc_error:
            exc = from_rpc_error(rpc_error)
            if isinstance(exc, core_exceptions.AlreadyExists):
                self._answered()
                return self._already_exists(envelope, attempts)
            self._count("CreateTask", exc)
            if grpc_code(exc) in TRANSIENT:
                if self.spool is not None:
                    self.spool.breaker.failure()
                raise _TransientError(exc) from None
            self._answered()
            raise self._translate(exc, target) from None
        self._answered()
        return EnqueueResult(envelope.id, envelope.queue)

    def _answered(self) -> None:
        """Cloud Tasks answered a CreateTask: the breaker closes."""
        if self.spool is not None:
            self.spool.breaker.success()

    @staticmethod
    def _already_exists(envelope: Envelope, attempts: _Attempts) -> EnqueueResult:
        if attempts.count > 1:
            # An earlier attempt of ours stored it; its answer was lost on the way.
            return EnqueueResult(envelope.id, envelope.queue)
        if envelope.idempotency_key is not None:
            return EnqueueResult(envelope.id, envelope.queue, duplicate=True)
        # A random id collided with a recent task: nothing of this request is stored, and
        # the client's retry gets a fresh id.
        raise EngineUnavailableError(
            "Cloud Tasks already holds a task with this generated id; retry the request.",
            retry_after=1,
        )

    def _gave_up(
        self, error: core_exceptions.GoogleAPICallError, target: QueueTarget
    ) -> ProxyError:
        self._log(
            f"transient:{code_name(error)}",
            "CreateTask on %s failed until the deadline: %s",
            target.path,
            error,
        )
        return gave_up(error, self._budget)

    def _translate(
        self, exc: core_exceptions.GoogleAPICallError, target: QueueTarget
    ) -> ProxyError:
        code = grpc_code(exc)
        if code != grpc.StatusCode.INVALID_ARGUMENT:
            self._log(code.name if code else "other", "CreateTask on %s: %s", target.path, exc)
        return create_task_error(exc, target.settings.name)

    async def check_ready(self) -> None:
        """Raise :class:`EngineUnavailableError` unless every queue answers GetQueue.

        Each probe has a 1 s timeout and the answer is reused for 1.5 s. PERMISSION_DENIED
        counts as reachable: the Enqueuer role may create tasks but not read queues.
        """
        self._started_client()
        assert self._ready_lock is not None
        loop = asyncio.get_running_loop()
        if self._loop is not None and loop is not self._loop:
            # The admin listener may run on another loop; the channel belongs to this one.
            try:
                future = asyncio.run_coroutine_threadsafe(self.check_ready(), self._loop)
                await asyncio.wait_for(asyncio.wrap_future(future), 3 * READY_TIMEOUT)
            except (RuntimeError, TimeoutError):
                raise EngineUnavailableError(
                    "The Cloud Tasks engine is not answering.", retry_after=1
                ) from None
            return
        if loop.time() - self._ready_checked_at >= READY_CACHE:
            async with self._ready_lock:
                if loop.time() - self._ready_checked_at >= READY_CACHE:
                    self._ready_problem = await self._probe()
                    self._ready_checked_at = loop.time()
        if self._ready_problem is not None:
            detail, retry_after = self._ready_problem
            if retry_after != RETRY_AFTER_SETUP and self.spool and self.spool.accepting():
                return  # Cloud Tasks is down, but requests are kept in the spool
            raise EngineUnavailableError(detail, retry_after=retry_after)

    async def _probe(self) -> tuple[str, float] | None:
        client = self._started_client()
        results = await asyncio.gather(
            *(
                client.get_queue(name=target.path, timeout=READY_TIMEOUT, retry=None)
                for target in self._targets.values()
            ),
            return_exceptions=True,
        )
        for target, result in zip(self._targets.values(), results, strict=True):
            queue = target.settings.name
            if isinstance(result, Queue):
                if result.state == Queue.State.DISABLED:
                    return f"Cloud Tasks queue {queue!r} is disabled.", RETRY_AFTER_SETUP
                continue
            if isinstance(result, core_exceptions.GoogleAPICallError):
                self._count("GetQueue", result)
                code = grpc_code(result)
                if code == grpc.StatusCode.PERMISSION_DENIED:
                    continue
                if code == grpc.StatusCode.NOT_FOUND:
                    return f"Cloud Tasks queue {queue!r} does not exist.", RETRY_AFTER_SETUP
                name = code.name if code is not None else "an error"
                return f"Cloud Tasks answered {name} for queue {queue!r}.", retry_after(code)
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation
            return f"Cloud Tasks is not reachable ({type(result).__name__}).", RETRY_AFTER_TRANSIENT
        return None

    # ------------------------------------------------------------ helpers

    def _started_client(self) -> CloudTasksAsyncClient:
        if self._client is None:
            raise EngineUnavailableError("The Cloud Tasks engine is not running.", retry_after=1)
        return self._client

    def _count(self, method: str, exc: core_exceptions.GoogleAPICallError) -> None:
        code = grpc_code(exc)
        self._rpc_errors.labels(method, code.name if code is not None else "UNKNOWN").inc()

    def _log(self, key: str, message: str, *args: object) -> None:
        # One warning per kind of failure every few seconds: an outage must not flood logs.
        now = asyncio.get_running_loop().time()
        if now - self._logged_at.get(key, float("-inf")) >= _LOG_EVERY:
            self._logged_at[key] = now
            logger.warning(message, *args)


def _stop_at(loop: asyncio.AbstractEventLoop, deadline: float) -> Callable[[RetryCallState], bool]:
    """Stop retrying when the next attempt would start too close to ``deadline``."""

    def stop(state: RetryCallState) -> bool:
        return loop.time() + state.upcoming_sleep + MIN_ATTEMPT > deadline

    return stop
