"""One delivery attempt over HTTP, and what it tells the scheduler."""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
from typing import Protocol

from proxy.engines.delivery import BODY_METHODS, OutgoingRequest
from proxy.engines.http_client import SNIPPET_BYTES, ConnectionPool, Response
from proxy.engines.local.deadlines import DeadlineTimer

MAX_ANSWER_BODY = 1024 * 1024  # read at most this much of an answer, then drop the connection
MAX_RETRY_AFTER = 30 * 86400.0
# A field value that can be sent: no control characters but tab (RFC 9110 5.5).
_FIELD_OK = re.compile(r"[\t\x20-\x7e]*").fullmatch
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+").fullmatch  # a field name (RFC 9110 5.6.2)


class Outcome:
    """How an attempt ended: ``status`` (``None`` when no response came), the status class
    for metrics, the server's ``Retry-After`` in seconds, and a snippet of the response
    body or a description of the transport error. ``retry_after_value`` is the header's
    text as the server sent it (the relay passes it on)."""

    __slots__ = ("error", "kind", "retry_after", "retry_after_value", "status")

    def __init__(
        self,
        status: int | None,
        kind: str,
        error: str = "",
        retry_after: float | None = None,
        retry_after_value: str | None = None,
    ) -> None:
        self.status = status
        self.kind = kind
        self.error = error
        self.retry_after = retry_after
        self.retry_after_value = retry_after_value

    @property
    def success(self) -> bool:
        """2xx: the task is done. A 3xx is not followed and counts as a failure."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def executed(self) -> bool:
        """Counts toward X-CloudTasks-TaskExecutionCount: a response that is not a 5xx."""
        return self.status is not None and self.status < 500

    @property
    def throttles(self) -> bool:
        """429 and 503 slow the whole queue down."""
        return self.status in (429, 503)


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds from a ``Retry-After`` value (delta seconds or an HTTP date), ``None`` when
    absent or unreadable; at most 30 days. ``now`` is Unix seconds."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


async def send(
    pool: ConnectionPool,
    request: OutgoingRequest,
    *,
    deadline: float,
    now: float,
    timer: DeadlineTimer,
) -> Outcome:
    """Send ``request`` on ``pool`` (redirects not followed); give up after ``deadline``
    seconds in total, reading the answer included (``timer`` ends the attempt: one timer
    per queue rather than one per attempt). Never raises for transport problems: they
    become an :class:`Outcome` without a status. ``now`` is Unix seconds. Run it in a
    task of its own: that task is cancelled when the deadline passes."""
    problem = _unsendable(request)
    if problem:
        # A stored task that can never be sent: a failed attempt, so retries and the
        # dead-letter table deal with it instead of it cycling unseen.
        return Outcome(None, "error", f"cannot build the request: {problem}")
    task = asyncio.current_task(timer.loop())  # with the loop: no getpid() system call
    assert task is not None, "send() runs in a task"
    timer.start(task, deadline)
    body = request.body if request.body or request.method in BODY_METHODS else None
    try:
        response = await pool.request(
            request.method, request.url, request.headers, body, limit=MAX_ANSWER_BODY
        )
    except asyncio.CancelledError:
        if timer.stop(task) and task.uncancel() == 0:  # the deadline, not a shutdown
            return Outcome(
                None, "timeout", f"no response within the dispatch deadline ({deadline:g}s)"
            )
        raise
    except TimeoutError as exc:  # a socket-level timeout
        return Outcome(None, "timeout", f"timed out: {_describe(exc)}")
    except OSError as exc:  # ResponseError among them
        return Outcome(None, "error", _describe(exc))
    except ValueError as exc:  # a URL the client cannot send to
        return Outcome(None, "error", f"cannot build the request: {_describe(exc)}")
    finally:
        timer.stop(task)
    return _outcome(response, now)


def _unsendable(request: OutgoingRequest) -> str:
    """Why ``request`` cannot go on the wire as it is ('' when it can): header names must
    be tokens, values ASCII without control characters but tab (RFC 9110 5.1, 5.5)."""
    headers = request.headers
    values = "".join(headers.values())
    names = "".join(headers)
    if values.isascii() and values.isprintable() and _TOKEN(names):
        return ""  # one check for all of them: the usual case (no tab either)
    for name, value in headers.items():
        if not (_TOKEN(name) and _FIELD_OK(value)):
            return f"header {name[:64]!r} has a name or value that cannot be sent"
    return ""  # a tab, which the one check above does not let through


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:SNIPPET_BYTES]


def _outcome(response: Response, now: float) -> Outcome:
    status = response.status
    kind = f"{status // 100}xx" if 100 <= status < 600 else "error"
    if 200 <= status < 300:
        return Outcome(status, kind)
    retry_after = value = None
    if status in (429, 503):
        value = response.retry_after
        retry_after = parse_retry_after(value, now)
    return Outcome(status, kind, response.snippet.decode("utf-8", "replace"), retry_after, value)


class Sender(Protocol):
    """Makes the HTTP request of one attempt: in this event loop or in a delivery process."""

    async def send(self, request: OutgoingRequest, *, deadline: float, now: float) -> Outcome:
        """:func:`send` on the sender's connection pool; never raises for transport errors."""
        ...


class PoolSender:
    """A :class:`Sender` on a connection pool of this event loop, with one deadline timer
    for all its attempts."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.timer = DeadlineTimer()

    async def send(self, request: OutgoingRequest, *, deadline: float, now: float) -> Outcome:
        """See :func:`send`; ``deadline`` in seconds, ``now`` Unix seconds."""
        return await send(self.pool, request, deadline=deadline, now=now, timer=self.timer)
