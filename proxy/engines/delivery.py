"""Envelope -> the HTTP request the backend receives, the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.settings import QueueSettings
from proxy.envelope import Envelope

USER_AGENT = "Google-Cloud-Tasks"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    """What to send: method, absolute URL, headers (repeated names comma-joined), body."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def target_url(queue: QueueSettings, envelope: Envelope) -> str:
    """The queue's target joined with the request path and query (see :func:`join_url`)."""
    return join_url(queue.target, envelope.path, envelope.query)


def join_url(base: str, path: str, query: str) -> str:
    """``base`` joined with a request ``path`` and ``query`` (the base's own path is a
    prefix: ``http://b/api`` + ``/x`` gives ``http://b/api/x``)."""
    url = base.rstrip("/") + path
    return f"{url}?{query}" if query else url


def joined_headers(pairs: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """Headers as a map, repeated names comma-joined as Cloud Tasks requires."""
    headers = dict(pairs)
    if len(headers) == len(pairs):
        return headers  # no name repeats: the usual case
    headers = {}
    for name, value in pairs:
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def build_request(queue: QueueSettings, envelope: Envelope) -> OutgoingRequest:
    """The backend request for ``envelope``, before the per-attempt X-CloudTasks-* headers."""
    return OutgoingRequest(
        method=envelope.method,
        url=target_url(queue, envelope),
        headers=joined_headers(envelope.headers),
        body=envelope.body,
    )


def cloud_tasks_headers(
    *,
    queue: str,
    task: str,
    retry_count: int,
    execution_count: int,
    eta: float,
    previous_response: int | None = None,
    retry_reason: str | None = None,
) -> dict[str, str]:
    """The headers Cloud Tasks adds to every attempt (short queue and task ids).

    ``retry_count`` counts earlier attempts, ``execution_count`` earlier attempts that got
    a response; ``eta`` is the schedule time in Unix seconds. The previous-response and
    retry-reason headers are sent only on retries that follow an attempt with a response.
    """
    headers = {
        "user-agent": USER_AGENT,
        "x-cloudtasks-queuename": queue,
        "x-cloudtasks-taskname": task,
        "x-cloudtasks-taskretrycount": str(retry_count),
        "x-cloudtasks-taskexecutioncount": str(execution_count),
        "x-cloudtasks-tasketa": f"{eta:.6f}",
    }
    if previous_response is not None:
        headers["x-cloudtasks-taskpreviousresponse"] = str(previous_response)
        headers["x-cloudtasks-taskretryreason"] = retry_reason or ""
    return headers
