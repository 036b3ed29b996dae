"""Delivery of Cloud Tasks API tasks by the embedded engine's dispatcher.

:class:`TaskDispatcher` keeps the embedded engine's scheduling (token bucket at the
queue's rate with the derived burst, the concurrency cap, lease handling, 429/503
slow-down) and replaces one attempt, because Cloud Tasks semantics differ from the
proxy's:

- The request goes to the **task's own URL** (Cloud Tasks), not to a configured target
  (the proxy). That is why this server binds 127.0.0.1 by default: whoever can create a
  task chooses where the server sends requests. A queue-level ``http_target``
  (:attr:`TaskDispatcher.routing`, ``routing.py``) overrides the URL, method, headers and
  token of every attempt.
- Each attempt uses the task's ``dispatch_deadline``; an OIDC/OAuth token request becomes
  a token signed by the server's own key in ``Authorization: Bearer`` (``signing.py``;
  an unsigned stand-in with ``--unsigned-tokens``).
- ``X-CloudTasks-QueueName`` is the short queue id; User-Agent ``Google-Cloud-Tasks``.
- A task that runs out of retries (``max_attempts`` and ``max_retry_duration`` both
  reached) is **deleted**, as in Cloud Tasks (no dead-letter table here).
- ``dispatch_count`` counts attempts when they start (in-flight ones included),
  ``response_count`` attempts that got any HTTP answer; ``first_attempt`` and
  ``last_attempt`` are kept as the Task resource documents.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from proxy.cloudtasks_server.routing import QueueRouting
from proxy.cloudtasks_server.tasks import NO_RESPONSE_DEADLINE, NO_RESPONSE_ERROR
from proxy.engines.delivery import OutgoingRequest, joined_headers
from proxy.engines.local import attempt
from proxy.engines.local.dispatcher import LEASE_MARGIN, Dispatcher
from proxy.engines.local.store.records import AttemptResult, LeasedTask
from proxy.engines.local.store.server import ServerStore, TaskTarget


class TaskDispatcher(Dispatcher):
    """The dispatcher of one API queue (store key: the full queue name): the embedded
    engine's scheduling, sequence and retry decision, with the task's own request and
    the server's records (the four hooks of :class:`Dispatcher`)."""

    GIVE_UP_RESULT = "deleted: out of retries"
    GIVE_UP_LEVEL = logging.INFO
    short_name = ""
    routing: QueueRouting | None = None  # the queue's http_target, set by the runtime
    manual: set[asyncio.Task[bool]]  # RunTask attempts in flight

    def configure(
        self, short_name: str, server_store: ServerStore, token: Callable[[str, float], str]
    ) -> None:
        """Set the short queue id sent in X-CloudTasks-QueueName, the server's store, and
        ``token(request_json, now)``: the token a task's OIDC/OAuth request gets."""
        self.short_name = short_name
        self.server_store = server_store
        self.token = token
        self.manual = set()

    async def run_now(self, task: LeasedTask) -> None:
        """RunTask: start an attempt of ``task`` now, whatever the rate limit, the
        concurrency cap or the paused state; the outcome is recorded as for any attempt."""
        target = await self.server_store.task_target(task.seq)
        if target is None:
            return
        lease_until = self.clock.time() + self.queue.dispatch_deadline + LEASE_MARGIN
        await self._started(task, lease_until)
        job = asyncio.create_task(
            self.deliver(task, self._request(task, target), target.dispatch_deadline)
        )
        self.manual.add(job)
        job.add_done_callback(self.manual.discard)

    async def cancel_manual(self) -> None:
        """Cancel RunTask attempts still going (shutdown; their leases run out)."""
        jobs = list(self.manual)
        for job in jobs:
            job.cancel()
        for job in jobs:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await job

    def _started(self, task: LeasedTask, lease_until: float | None) -> asyncio.Future[None]:
        return self.server_store.attempt_started(task, self.clock.time(), lease_until)

    def _request(self, task: LeasedTask, target: TaskTarget) -> OutgoingRequest:
        envelope = task.envelope
        method, url, body = envelope.method, target.url, envelope.body
        headers = joined_headers(envelope.headers)
        token = target.token
        routing = self.routing
        if routing is not None:
            url = routing.url(target.url)
            method, headers, body = routing.request(method, headers, body)
            token = routing.token_for(target.token, target.url, url)
        headers.update(self.attempt_headers(task, self.short_name))
        if token is not None:
            headers = {k: val for k, val in headers.items() if k.lower() != "authorization"}
            headers["authorization"] = "Bearer " + self.token(token, self.clock.time())
        return OutgoingRequest(method, url, headers, body)

    # ------------------------------------------------------------ the hooks

    async def prepare(self, task: LeasedTask) -> tuple[OutgoingRequest, float] | None:
        """The task's own URL, headers and token, within its own dispatch deadline; the
        attempt is counted before it starts (``dispatch_count``)."""
        target = await self.server_store.task_target(task.seq)
        if target is None:  # deleted or purged since the lease
            return None
        await self._started(task, None)
        return self._request(task, target), target.dispatch_deadline

    async def record_success(self, task: LeasedTask) -> None:
        """Delete the task; a named task's name stays taken."""
        await self.server_store.task_done(task.seq, self.clock.time())

    async def record_retry(
        self,
        task: LeasedTask,
        outcome: attempt.Outcome,
        result: AttemptResult,
        now: float,
        eta: float,
    ) -> None:
        """Record the attempt on the Task resource and schedule the next at ``eta``."""
        await self.server_store.attempt_failed(task, result, _status(outcome), now, eta)

    async def record_give_up(
        self, task: LeasedTask, outcome: attempt.Outcome, result: AttemptResult, now: float
    ) -> None:
        """Out of retries: the task is deleted, as in Cloud Tasks."""
        await self.server_store.attempt_failed(task, result, _status(outcome), now, None)


def _status(outcome: attempt.Outcome) -> int:
    """The attempt's HTTP status, or the server's code for no answer (the Task resource's
    ``last_attempt.response_status``)."""
    if outcome.status is not None:
        return outcome.status
    return NO_RESPONSE_DEADLINE if outcome.kind == "timeout" else NO_RESPONSE_ERROR
