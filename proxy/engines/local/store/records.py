"""Values the task store hands out: leased tasks, counters, dead letters, attempts."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.envelope import Envelope


@dataclass(frozen=True, slots=True)
class LeasedTask:
    """A task taken for one attempt. ``eta`` is when this attempt was due (Unix seconds),
    ``attempts`` the attempts made so far, ``responses`` those that got a non-5xx answer."""

    seq: int
    envelope: Envelope
    eta: float
    attempts: int
    responses: int
    first_attempt_at: float | None
    last_status: int | None
    size: int


@dataclass(frozen=True, slots=True)
class Lease:
    """The result of :meth:`Store.lease`: the tasks taken and, when fewer were due than
    asked for, when the next one becomes due (``None``: the queue is empty)."""

    tasks: list[LeasedTask]
    next_due: float | None


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Per-queue counters: tasks not yet completed, their body bytes, dead letters."""

    queue: str
    tasks: int
    bytes: int
    dead: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A task that ran out of attempts; ``last_error`` is the response snippet or the
    transport error of the last attempt. Times are Unix seconds."""

    id: str
    queue: str
    method: str
    path: str
    query: str
    size: int
    received_at: float
    attempts: int
    last_status: int | None
    last_error: str | None
    died_at: float


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one failed attempt left behind: when it started, the status (``None`` without
    a response), whether the answer counts as an execution, and a snippet or error text."""

    started_at: float
    status: int | None
    executed: bool
    error: str
