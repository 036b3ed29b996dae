"""Delivery of Cloud Tasks API tasks by the embedded engine's dispatcher.

:class:`TaskDispatcher` keeps the embedded engine's scheduling (token bucket at the
queue's rate with the derived burst, the concurrency cap, lease handling, 429/503
slow-down) and replaces one attempt, because Cloud Tasks semantics differ from the
proxy's:

- The request goes to the **task's own URL** (Cloud Tasks), not to a configured target
  (the proxy). That is why this server binds 127.0.0.1 by default: whoever can create a
  task chooses where the server sends requests.
- Each attempt uses the task's ``dispatch_deadline``; an OIDC/OAuth token request becomes
  an unsigned local token in ``Authorization: Bearer`` (see ``tasks.local_token``).
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
import sqlite3

from proxy.cloudtasks_server import tables
from proxy.cloudtasks_server.tasks import NO_RESPONSE_DEADLINE, NO_RESPONSE_ERROR, local_token
from proxy.engines.delivery import OutgoingRequest, cloud_tasks_headers, joined_headers
from proxy.engines.local import attempt
from proxy.engines.local.dispatcher import LEASE_MARGIN, Dispatcher
from proxy.engines.local.store import AttemptResult, LeasedTask
from proxy.engines.retry import backoff_delay, should_retry

_META = "SELECT url, token, dispatch_deadline FROM ct_tasks WHERE seq = ?"


class TaskDispatcher(Dispatcher):
    """The dispatcher of one API queue (store key: the full queue name)."""

    short_name = ""
    manual: set[asyncio.Task[None]]  # RunTask attempts in flight

    def configure(self, short_name: str) -> None:
        """Set the short queue id sent in X-CloudTasks-QueueName."""
        self.short_name = short_name
        self.manual = set()

    async def run_now(self, task: LeasedTask) -> None:
        """RunTask: start an attempt of ``task`` now, whatever the rate limit, the
        concurrency cap or the paused state; the outcome is recorded as for any attempt."""
        meta = await self._meta(task.seq)
        if meta is None:
            return
        await self._begin(task, lease=True)
        job = asyncio.create_task(self._send(task, meta))
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

    async def _meta(self, seq: int) -> tuple[str, str | None, float] | None:
        rows = await asyncio.to_thread(self.store.read, _META, (seq,))
        return (str(rows[0][0]), rows[0][1], float(rows[0][2])) if rows else None

    async def _attempt(self, task: LeasedTask) -> bool | None:
        meta = await self._meta(task.seq)
        if meta is None:  # deleted or purged since the lease
            return None
        await self._begin(task, lease=False)
        await self._send(task, meta)
        return None

    def _begin(self, task: LeasedTask, *, lease: bool) -> asyncio.Future[None]:
        now = self.clock.time()
        lease_until = now + self.queue.dispatch_deadline + LEASE_MARGIN

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE ct_tasks SET dispatch_count = dispatch_count + 1,"
                " first_dispatch = COALESCE(first_dispatch, ?), last_schedule = ?,"
                " last_dispatch = ?, last_response = NULL, last_status = NULL WHERE seq = ?",
                (now, task.eta, now, task.seq),
            )
            if lease:
                conn.execute(
                    "UPDATE tasks SET visible_at = ?, leased = 1 WHERE seq = ?",
                    (lease_until, task.seq),
                )

        return self.store.writer.submit(run)

    def _request(self, task: LeasedTask, url: str, token: str | None) -> OutgoingRequest:
        envelope = task.envelope
        headers = joined_headers(envelope.headers)
        previous = task.last_status if task.attempts else None
        headers.update(
            cloud_tasks_headers(
                queue=self.short_name,
                task=envelope.id,
                retry_count=task.attempts,
                execution_count=task.responses,
                eta=task.eta,
                previous_response=previous,
            )
        )
        if token is not None:
            headers = {k: val for k, val in headers.items() if k.lower() != "authorization"}
            headers["authorization"] = "Bearer " + local_token(token, self.clock.time())
        return OutgoingRequest(envelope.method, url, headers, envelope.body)

    async def _send(self, task: LeasedTask, meta: tuple[str, str | None, float]) -> None:
        url, token, deadline = meta
        request = self._request(task, url, token)
        started = self.clock.time()
        started_mono = self.clock.monotonic()
        outcome = await self.sender.send(request, deadline=deadline, now=started)
        latency = self.clock.monotonic() - started_mono
        self._delivery_seconds.observe(latency)
        self._dispatches[outcome.kind].inc()
        attempts = task.attempts + 1
        now = self.clock.time()
        if outcome.success:
            await self.store.writer.submit(lambda c: tables.remove_task(c, task.seq, now))
            self._task_attempts.observe(attempts)
            self._log(task, outcome, attempts, latency, "done")
            return
        if outcome.throttles:
            self.throttle.throttled(self.clock.monotonic(), outcome.retry_after)
        status = outcome.status
        if status is None:
            status = NO_RESPONSE_DEADLINE if outcome.kind == "timeout" else NO_RESPONSE_ERROR
        first = task.first_attempt_at if task.first_attempt_at is not None else started
        retry = self.queue.retry
        if not should_retry(retry, attempts=attempts, first_attempt_at=first, now=now):
            await self._record(task, outcome, status, started, now, None)
            self._task_attempts.observe(attempts)
            self._log(task, outcome, attempts, latency, "deleted: out of retries")
            return
        delay = backoff_delay(retry, attempts - 1)
        if outcome.retry_after is not None:
            delay = max(delay, outcome.retry_after)
        await self._record(task, outcome, status, started, now, now + delay)
        self._log(task, outcome, attempts, latency, "retry", retry_in=round(delay, 3))

    def _record(
        self,
        task: LeasedTask,
        outcome: attempt.Outcome,
        status: int,
        started: float,
        now: float,
        eta: float | None,
    ) -> asyncio.Future[None]:
        """A failed attempt: schedule the next one at ``eta``, or delete the task when
        ``eta`` is ``None`` (retries exhausted)."""
        result = AttemptResult(started, outcome.status, outcome.executed, outcome.error)
        first = task.first_attempt_at if task.first_attempt_at is not None else started
        answered = outcome.status is not None

        def run(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE ct_tasks SET response_count = response_count + ?, last_response = ?,"
                " last_status = ? WHERE seq = ?",
                (int(answered), now if answered else None, status, task.seq),
            )
            if eta is None:
                tables.remove_task(conn, task.seq, now)
                return
            conn.execute(
                "UPDATE tasks SET attempts = attempts + 1, responses = responses + ?,"
                " first_attempt_at = ?, last_status = ?, last_error = ?, eta = ?,"
                " visible_at = ?, leased = 0 WHERE seq = ?",
                (int(result.executed), first, result.status, result.error[:1024], eta, eta,
                 task.seq),
            )  # fmt: skip

        return self.store.writer.submit(run)
