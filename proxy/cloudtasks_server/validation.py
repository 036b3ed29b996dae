"""Names, limits and the one error type of the local Cloud Tasks server.

Every client mistake becomes an :class:`ApiError` carrying the gRPC status Cloud Tasks
answers with (``INVALID_ARGUMENT``, ``NOT_FOUND``, ``ALREADY_EXISTS``,
``FAILED_PRECONDITION``); the servicer turns it into the call's status, so a client never
sees ``UNKNOWN`` for its own mistake.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import grpc

from proxy.limits import LOCATION_RE, MAX_TASK_BYTES, PROJECT_ID_RE, QUEUE_ID_RE, TASK_ID_RE

DEFAULT_RATE = 500.0
DEFAULT_CONCURRENCY = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1  # seconds
DEFAULT_MAX_BACKOFF = 3600.0  # seconds
DEFAULT_MAX_DOUBLINGS = 16
DEFAULT_DISPATCH_DEADLINE = 600.0  # seconds
DEFAULT_MAX_TASK_BYTES = MAX_TASK_BYTES  # the CreateTask reference's limit
TASK_NAME_BLOCK = 3600.0  # seconds a task name stays taken after the task is gone
QUEUE_NAME_BLOCK = 7 * 86400.0  # seconds a deleted queue's name stays taken
MAX_TASK_PAGE = 1000
MAX_QUEUE_PAGE = 9800


class ApiError(Exception):
    """A refusal with the gRPC status code the client must see."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def invalid(message: str) -> ApiError:
    """INVALID_ARGUMENT."""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ApiError:
    """NOT_FOUND."""
    return ApiError(grpc.StatusCode.NOT_FOUND, message)


@dataclass(frozen=True, slots=True)
class QueueName:
    """``projects/P/locations/L/queues/Q``, split."""

    project: str
    location: str
    queue: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def path(self) -> str:
        """The full queue name."""
        return f"{self.parent}/queues/{self.queue}"


def parse_parent(parent: str) -> str:
    """Check ``projects/P/locations/L``; return it. INVALID_ARGUMENT otherwise."""
    parts = parent.split("/")
    if (
        len(parts) != 4
        or parts[0] != "projects"
        or parts[2] != "locations"
        or not PROJECT_ID_RE.match(parts[1])
        or not LOCATION_RE.match(parts[3])
    ):
        raise invalid(f"Invalid resource field value in the request: parent {parent!r}.")
    return parent


def parse_queue_name(name: str) -> QueueName:
    """A full queue name, split; INVALID_ARGUMENT for anything else (the id must be 1-100
    letters, digits or hyphens)."""
    parts = name.split("/")
    if len(parts) != 6 or parts[4] != "queues":
        raise invalid(f"Invalid queue name {name!r}: expected projects/P/locations/L/queues/Q.")
    parse_parent("/".join(parts[:4]))
    if not QUEUE_ID_RE.match(parts[5]):
        raise invalid(f"Invalid queue id {parts[5]!r}: 1-100 letters, digits or hyphens.")
    return QueueName(parts[1], parts[3], parts[5])


def parse_task_name(name: str) -> tuple[QueueName, str]:
    """A full task name: its queue and the task id (``[A-Za-z0-9_-]``, at most 500)."""
    queue_part, sep, task_id = name.rpartition("/tasks/")
    if not sep:
        raise invalid(f"Invalid task name {name!r}: expected <queue>/tasks/TASK_ID.")
    queue = parse_queue_name(queue_part)
    if not TASK_ID_RE.match(task_id):
        raise invalid(f"Invalid task id {task_id!r}: 1-500 letters, digits, '_' or '-'.")
    return queue, task_id


def seconds(value: datetime.timedelta | None) -> float | None:
    """A Duration field in seconds, ``None`` when unset."""
    return None if value is None else value.total_seconds()


def page_size(value: int, maximum: int) -> int:
    """The page size to use: ``maximum`` when 0 (unset); INVALID_ARGUMENT when negative."""
    if value < 0:
        raise invalid("page_size must not be negative.")
    return min(value or maximum, maximum)
