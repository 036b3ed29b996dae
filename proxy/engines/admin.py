"""What the admin API asks of an engine: queue and task inspection and control.

Both engines implement :class:`QueueAdmin`. An operation an engine cannot offer (Cloud
Tasks has no dead-letter queue) raises :class:`~proxy.errors.NotSupportedError` with a
sentence saying why. Unknown queues and tasks raise :class:`~proxy.errors.NotFoundError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar, runtime_checkable

QueueState = Literal["running", "paused", "disabled"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueInfo:
    """A queue at a glance. Counts the engine cannot know are ``None``; ages in seconds,
    rates in dispatches per second."""

    name: str
    state: QueueState
    target: str
    rate: float
    burst: int
    concurrency: int
    current_rate: float | None = None
    tasks: int | None = None
    in_flight: int | None = None
    oldest_age: float | None = None
    dead_letters: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInfo:
    """A task waiting or in flight. Times are Unix seconds; ``headers`` and ``body`` are
    only filled in the full view."""

    id: str
    queue: str
    method: str
    path: str
    query: str
    created_at: float
    schedule_time: float
    dispatch_count: int
    response_count: int
    last_status: int | None = None
    body_bytes: int = 0
    headers: tuple[tuple[str, str], ...] | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetterInfo:
    """A task that ran out of attempts, with what its last attempt saw."""

    id: str
    queue: str
    method: str
    path: str
    query: str
    created_at: float
    failed_at: float
    attempts: int
    last_status: int | None
    last_error: str | None
    response_snippet: str | None
    body_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass ``next_cursor`` back to get the next one."""

    items: list[T]
    next_cursor: str | None = None


@runtime_checkable
class QueueAdmin(Protocol):
    """Queue and task operations of the admin API."""

    async def list_queues(self) -> list[QueueInfo]:
        """Every configured queue."""
        ...

    async def pause_queue(self, queue: str) -> QueueInfo:
        """Stop dispatching ``queue``; new tasks are still accepted."""
        ...

    async def resume_queue(self, queue: str) -> QueueInfo:
        """Dispatch ``queue`` again."""
        ...

    async def purge_queue(self, queue: str) -> int | None:
        """Delete every task of ``queue`` created before the call; the count when known."""
        ...

    async def list_tasks(
        self, queue: str, *, limit: int, cursor: str | None, full: bool = False
    ) -> Page[TaskInfo]:
        """Tasks of ``queue`` in schedule order."""
        ...

    async def get_task(self, queue: str, task_id: str) -> TaskInfo:
        """One task, full view."""
        ...

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task that is waiting or in flight."""
        ...

    async def list_dead_letters(
        self, queue: str, *, limit: int, cursor: str | None
    ) -> Page[DeadLetterInfo]:
        """Dead letters of ``queue``, newest first."""
        ...

    async def replay_dead_letter(self, queue: str, task_id: str) -> None:
        """Put a dead letter back on its queue with a fresh attempt count, due now."""
        ...

    async def replay_dead_letters(self, queue: str) -> int:
        """Replay every dead letter of ``queue``; return how many."""
        ...

    async def drop_dead_letter(self, queue: str, task_id: str) -> None:
        """Delete a dead letter for good."""
        ...
