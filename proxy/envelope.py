"""The Envelope: the one value that crosses from ingress to an engine."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Envelope:
    """One accepted request, ready to persist as a task.

    ``id`` is the short task id (``[A-Za-z0-9_-]``), ``path`` the percent-encoded path to
    request on the queue's target (starting with ``/``), ``query`` the raw query string
    without ``?``, ``headers`` the filtered headers to deliver as lower-case
    ``(name, value)`` pairs. Times are Unix seconds; ``schedule_time`` ``None`` means now.
    """

    id: str
    queue: str
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    received_at: float
    schedule_time: float | None = None
    idempotency_key: str | None = None
    request_id: str = ""

    # One is made per request: filling __dict__ directly takes half the time of the
    # object.__setattr__ call per field that a generated frozen __init__ makes.
    def __init__(
        self,
        *,
        id: str,
        queue: str,
        method: str,
        path: str,
        query: str,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        received_at: float,
        schedule_time: float | None = None,
        idempotency_key: str | None = None,
        request_id: str = "",
    ) -> None:
        self.__dict__.update(
            id=id,
            queue=queue,
            method=method,
            path=path,
            query=query,
            headers=headers,
            body=body,
            received_at=received_at,
            schedule_time=schedule_time,
            idempotency_key=idempotency_key,
            request_id=request_id,
        )


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What an engine reports for a persisted task; ``duplicate`` when the idempotency key
    matched a task that already exists (nothing new was stored)."""

    task_id: str
    queue: str
    duplicate: bool = False
