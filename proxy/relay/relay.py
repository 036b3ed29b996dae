"""The Cloud Tasks delivery relay: Cloud Tasks delivers a relay-mode task to the proxy,
which delivers it to the backend and keeps what Cloud Tasks alone would lose.

One delivery, in order:

1. The OIDC token is verified (``verify.py``) before anything else: a request without a
   good token of the trusted account gets 401/403 and nothing is forwarded.
2. The queue is the first path segment after the relay's path; the backend is that
   queue's configured ``target`` (never anything the request names), followed by the rest
   of the path and the query.
3. The backend gets the same method, path, query and body, the headers as Cloud Tasks
   delivered them (its ``X-CloudTasks-*`` included) less hop-by-hop headers and the
   relay's token, plus the backend's own token when the queue has one (``tokens.py``, as
   the embedded engine sends it), on the proxy's HTTP/1.1 client with the queue's
   ``dispatch_deadline`` less :data:`DEADLINE_MARGIN` (so the relay answers before Cloud
   Tasks gives up on it).
4. Cloud Tasks gets the backend's status (a 429/503 with its ``Retry-After`` as it came),
   502 when the backend could not be reached, 504 when it did not answer in time, 503
   when no backend token could be had; so Cloud Tasks retries as its RetryConfig says.
5. On the attempt the queue's RetryConfig makes the last (``X-CloudTasks-TaskRetryCount``
   and ``max_attempts``; for ``max_retry_duration`` the first attempt's dispatch time,
   read with GetTask), a failure is copied into ``<queue>-dead-letters`` and Cloud Tasks
   gets 200, so it stops. If that copy fails, it gets 503 (and, as it is the last
   attempt, deletes the task: logged as an error).

Every attempt is counted and logged as the embedded engine's are
(``proxy/engines/recording.py``); ``ingest_proxy_dead_letters`` is the companion
queue's size, counted every :data:`COUNT_EVERY` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2 import CloudTasksAsyncClient, GetTaskRequest

from proxy.config.settings import QueueSettings, Settings
from proxy.engines.cloudtasks.channel import make_client
from proxy.engines.cloudtasks.dead_letters import (
    DeadLetters,
    LastAttempt,
    dead_letter_task,
)
from proxy.engines.cloudtasks.request import queue_targets
from proxy.engines.delivery import OutgoingRequest, join_url, joined_headers
from proxy.engines.http_client import ConnectionPool, tls_context
from proxy.engines.local.attempt import Outcome, PoolSender
from proxy.engines.recording import AttemptRecorder
from proxy.engines.retry import GIVE_UP, decide
from proxy.engines.tokens import AccessTokens, IdTokens, TokenError, Tokens
from proxy.errors import (
    BadRequestError,
    EngineUnavailableError,
    NotFoundError,
    ProxyError,
)
from proxy.http.responses import Answer, error_response_parts
from proxy.ingress.headers import HOP_BY_HOP
from proxy.metrics import Metrics
from proxy.relay.verify import TokenVerifier

logger = logging.getLogger("ingest_proxy.relay")

DEADLINE_MARGIN = 2.0  # seconds the relay keeps of Cloud Tasks' dispatch deadline
COUNT_EVERY = 60.0  # seconds between two counts of each dead-letter queue
# Cloud Tasks decides on a retry after our answer reached it, by its own clock: the relay
# counts max_retry_duration as reached this many seconds early, so it never leaves to be
# deleted a task Cloud Tasks finds out of time (a task that had less than this left is
# kept as a dead letter a retry early).
DURATION_MARGIN = 1.0
GET_TASK_TIMEOUT = 5.0
# Never forwarded: framing, the relay's own host and token (the backend gets its own).
_NOT_FORWARDED = HOP_BY_HOP | {"host", "content-length", "authorization", "expect"}
_NO_ANSWER_STATUS = {"error": 502, "timeout": 504, "auth": 503}


class Relay:
    """The relay of every relay-mode queue of ``settings``; :meth:`start` and
    :meth:`aclose` in the event loop that serves it."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        *,
        verifier: TokenVerifier | None = None,
        client: CloudTasksAsyncClient | None = None,
    ) -> None:
        ct = settings.cloudtasks
        self.settings = settings
        self.prefix = ct.relay_path.encode()
        self.queues = {q.name: q for q in settings.queues if ct.relays(q)}
        self.targets = {n: t for n, t in queue_targets(settings).items() if n in self.queues}
        self.verifier = verifier or TokenVerifier(
            issuer=ct.relay_issuer,
            audience=ct.relay_token_audience,
            email=ct.relay_service_account_email or "",
            certs_url=ct.relay_certs_url,
        )
        self.recorders = {name: AttemptRecorder(metrics, name) for name in self.queues}
        self.tokens = {name: _backend_tokens(settings, q) for name, q in self.queues.items()}
        self._dead_letter_gauge = metrics.dead_letters
        self._dead_counts: dict[str, int] = {}
        self._client = client
        self._own_client = client is None
        self._senders: dict[str, PoolSender] = {}
        self._counting: asyncio.Task[None] | None = None
        self.started = False

    async def start(self) -> None:
        """Open the backend pools and the Cloud Tasks client; start counting dead letters."""
        if self._client is None:
            self._client = make_client(self.settings.cloudtasks)
        tls = tls_context()
        self._senders = {
            name: PoolSender(ConnectionPool(queue.concurrency, tls))
            for name, queue in self.queues.items()
        }
        self._counting = asyncio.get_running_loop().create_task(self._count_dead_letters())
        self.started = True

    async def aclose(self) -> None:
        """Stop; deliveries arriving afterwards get 503 (Cloud Tasks retries them)."""
        self.started = False
        if self._counting is not None:
            self._counting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._counting
        for sender in self._senders.values():
            await sender.pool.close()
        client, self._client = self._client, None
        if client is not None and self._own_client:
            await client.transport.close()  # type: ignore[no-untyped-call]

    def serves(self, raw_path: bytes) -> bool:
        """Whether ``raw_path`` is the relay's (its path, or below it)."""
        prefix = self.prefix
        return raw_path.startswith(prefix) and raw_path[len(prefix) : len(prefix) + 1] in (
            b"/",
            b"",
        )

    # ------------------------------------------------------------ one delivery

    async def handle(self, scope: Mapping[str, Any], body: bytes) -> Answer:
        """The answer to Cloud Tasks for the delivery ``scope`` (an ASGI HTTP scope) with
        ``body``. Never raises for what the request holds: refusals are JSON answers."""
        try:
            if not self.started:
                raise EngineUnavailableError("The relay is not running.", retry_after=1)
            # Names arrive in lower case; a repeated one is comma-joined, as Cloud Tasks
            # keeps headers (a map).
            headers = joined_headers(
                tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"])
            )
            await self.verifier.verify(headers.get("authorization"))
            queue, path = self._route(scope)
            return await self._relay(queue, scope, path, body, headers)
        except ProxyError as exc:
            return error_response_parts(exc)
        except Exception:
            logger.exception("relaying a delivery failed")
            return error_response_parts(
                EngineUnavailableError("The relay failed on this delivery.", retry_after=1)
            )

    def _route(self, scope: Mapping[str, Any]) -> tuple[QueueSettings, str]:
        raw = bytes(scope.get("raw_path") or str(scope["path"]).encode())
        rest = raw[len(self.prefix) :] if self.serves(raw) else b""
        name, _, path = rest.lstrip(b"/").partition(b"/")
        queue = self.queues.get(name.decode("latin-1"))
        if queue is None or not self.serves(raw):
            raise NotFoundError(
                "The relay serves /<queue>/<path> for the queues in relay mode only.",
                code="unknown_queue",
            )
        return queue, "/" + path.decode("latin-1")

    async def _relay(
        self,
        queue: QueueSettings,
        scope: Mapping[str, Any],
        path: str,
        body: bytes,
        headers: dict[str, str],
    ) -> Answer:
        sent_for = headers.get("x-cloudtasks-queuename")
        if sent_for != queue.name:
            raise BadRequestError(
                "X-CloudTasks-QueueName does not name the queue of the relay path.",
                code="queue_mismatch",
            )
        recorder = self.recorders[queue.name]
        task_id = headers.get("x-cloudtasks-taskname", "")
        attempts = _count(headers.get("x-cloudtasks-taskretrycount")) + 1
        request_id = headers.get("x-request-id")
        outgoing = OutgoingRequest(
            method=str(scope["method"]),
            url=join_url(queue.target, path, _query(scope)),
            headers={k: v for k, v in headers.items() if k not in _NOT_FORWARDED},
            body=body,
        )
        started = time.time()
        started_mono = time.monotonic()
        outcome = await self._send(queue, outgoing, started)
        latency = time.monotonic() - started_mono
        recorder.dispatches[outcome.kind].inc()
        if outcome.kind != "auth":
            recorder.delivery_seconds.observe(latency)
        if outcome.success:
            recorder.task_attempts.observe(attempts)
            recorder.log(task_id, request_id, outcome, attempts, latency, "done")
            return _answer(outcome.status or 200, outcome)
        first = await self._last_attempt_began(queue, task_id, attempts, outcome)
        if first is not None:
            return await self._dead_letter(
                queue, outcome, outgoing, headers, path, scope, (task_id, attempts, first, latency)
            )
        recorder.log(task_id, request_id, outcome, attempts, latency, "retry")
        return _answer(outcome.status or _NO_ANSWER_STATUS[outcome.kind], outcome)

    async def _send(self, queue: QueueSettings, request: OutgoingRequest, now: float) -> Outcome:
        tokens = self.tokens[queue.name]
        if tokens is not None:
            try:
                request.headers["authorization"] = "Bearer " + await tokens.token()
            except TokenError as exc:
                return Outcome(None, "auth", str(exc))
        deadline = max(1.0, queue.dispatch_deadline - DEADLINE_MARGIN)
        outcome = await self._senders[queue.name].send(request, deadline=deadline, now=now)
        if tokens is not None and outcome.error:
            outcome.error = tokens.redact(outcome.error)
        return outcome

    async def _last_attempt_began(
        self, queue: QueueSettings, task_id: str, attempts: int, outcome: Outcome
    ) -> float | None:
        """When Cloud Tasks makes no attempt after this failed one (the same
        :func:`~proxy.engines.retry.decide` the embedded engine uses), the time its first
        attempt began as far as known (Unix seconds; now when not read); else ``None``."""
        retry = queue.retry
        now = time.time()
        first = now
        if retry.max_retry_duration > 0 and (
            retry.max_attempts == -1 or attempts >= retry.max_attempts
        ):
            first = await self._first_attempt_at(queue, task_id, now)
        decision = decide(
            retry,
            success=False,
            retry_after=outcome.retry_after,
            attempts=attempts,
            first_attempt_at=first,
            now=now + DURATION_MARGIN,
        )
        return first if decision is GIVE_UP else None

    async def _first_attempt_at(self, queue: QueueSettings, task_id: str, now: float) -> float:
        """The task's first dispatch time (GetTask's ``first_attempt``; Cloud Tasks puts
        it in no header). If it cannot be read, a time long past: in doubt the task is
        kept as a dead letter rather than left to be deleted."""
        client = self._client
        try:
            assert client is not None
            task = await client.get_task(
                request=GetTaskRequest(name=self.targets[queue.name].task_name(task_id)),
                timeout=GET_TASK_TIMEOUT,
            )
            dispatched = task.first_attempt.dispatch_time
            if dispatched:
                return float(dispatched.timestamp())
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            logger.warning(
                "queue %s: cannot read task %s's first attempt (%s): treated as its last",
                queue.name, task_id, type(exc).__name__,
            )  # fmt: skip
        return now - queue.retry.max_retry_duration

    async def _dead_letter(
        self,
        queue: QueueSettings,
        outcome: Outcome,
        outgoing: OutgoingRequest,
        headers: dict[str, str],
        path: str,
        scope: Mapping[str, Any],
        attempt: tuple[str, int, float, float],
    ) -> Answer:
        task_id, attempts, first, latency = attempt
        recorder = self.recorders[queue.name]
        target = self.targets[queue.name]
        now = time.time()
        answered = outcome.status is not None
        last = LastAttempt(
            task_id=task_id,
            status=outcome.status,
            error="" if answered else outcome.error,
            snippet=outcome.error.encode() if answered else b"",
            attempts=attempts,
            failed_at=now,
            first_attempt_at=first,
        )
        kept = {
            name: value
            for name, value in headers.items()
            if name not in _NOT_FORWARDED
            and name != "user-agent"
            and not name.startswith(("x-cloudtasks-", "x-google-", "x-appengine-"))
        }
        task = dead_letter_task(
            target,
            last,
            method=outgoing.method,
            url=join_url(target.relay_base or "", path, _query(scope)),
            headers=kept,
            body=outgoing.body,
        )
        request_id = headers.get("x-request-id")
        try:
            assert self._client is not None
            await DeadLetters(self._client).add(task)
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            logger.error(
                "queue %s: task %s failed its last attempt and cannot be kept as a dead "
                "letter (%s): Cloud Tasks deletes it",
                queue.name, task_id, type(exc).__name__,
            )  # fmt: skip
            recorder.log(
                task_id, request_id, outcome, attempts, latency, "lost", level=logging.ERROR
            )
            return _answer(503, outcome)
        self._dead_counts[queue.name] = self._dead_counts.get(queue.name, 0) + 1
        self._dead_letter_gauge.labels(queue.name).set(self._dead_counts[queue.name])
        recorder.task_attempts.observe(attempts)
        recorder.log(
            task_id, request_id, outcome, attempts, latency, "dead_letter", level=logging.WARNING
        )
        payload = b'{"dead_letter": true}'
        return 200, [(b"content-type", b"application/json"), _length(payload)], payload

    async def _count_dead_letters(self) -> None:
        while True:
            for name, target in self.targets.items():
                try:
                    assert self._client is not None
                    count = await DeadLetters(self._client).count(target)
                except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
                    logger.warning(
                        "queue %s: cannot count dead letters: %s", name, type(exc).__name__
                    )
                    continue
                self._dead_counts[name] = count
                self._dead_letter_gauge.labels(name).set(count)
            await asyncio.sleep(COUNT_EVERY)


def _count(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _query(scope: Mapping[str, Any]) -> str:
    """The query string of the request in ``scope``."""
    return bytes(scope.get("query_string") or b"").decode("latin-1")


def _answer(status: int, outcome: Outcome) -> Answer:
    """Cloud Tasks' answer: ``status``, and a 429/503's ``Retry-After`` as it came."""
    payload = b'{"status": %d}' % (outcome.status or 0)
    headers = [(b"content-type", b"application/json"), _length(payload)]
    if outcome.retry_after_value is not None and status in (429, 503):
        headers.append((b"retry-after", outcome.retry_after_value.encode("latin-1")))
    return status, headers, payload


def _length(payload: bytes) -> tuple[bytes, bytes]:
    return b"content-length", str(len(payload)).encode()


def _backend_tokens(settings: Settings, queue: QueueSettings) -> Tokens | None:
    """The token the backend expects, as the Cloud Tasks engine would have asked Cloud
    Tasks for it: the queue's (else the engine's) service account, OIDC for the queue's
    audience or OAuth for its scope; none with ``auth = "none"`` or no account."""
    if queue.auth == "none":
        return None
    account = queue.service_account_email or settings.cloudtasks.service_account_email
    if not account:
        return None
    iam_url = settings.local.iam_credentials_url
    if queue.oauth:
        return AccessTokens(queue.oauth_scope, account, iam_url=iam_url)
    return IdTokens(queue.oidc_audience, account, iam_url=iam_url)
