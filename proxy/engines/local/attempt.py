"""One delivery attempt over HTTP, and what it tells the scheduler."""

from __future__ import annotations

import asyncio
import email.utils
import math
import re
from typing import Protocol

import aiohttp

from proxy.engines.delivery import BODY_METHODS, OutgoingRequest
from proxy.engines.local.deadlines import DeadlineTimer

SNIPPET_BYTES = 1024
MAX_SUCCESS_BODY = 1024 * 1024  # read at most this much of a 2xx body, then drop the connection
MAX_RETRY_AFTER = 30 * 86400.0
# A field value that can be sent: no control characters but tab (RFC 9110 5.5).
_FIELD_OK = re.compile(r"[\t\x20-\x7e]*").fullmatch


class Outcome:
    """How an attempt ended: ``status`` (``None`` when no response came), the status class
    for metrics, the server's ``Retry-After`` in seconds, and a snippet of the response
    body or a description of the transport error."""

    __slots__ = ("error", "kind", "retry_after", "status")

    def __init__(
        self, status: int | None, kind: str, error: str = "", retry_after: float | None = None
    ) -> None:
        self.status = status
        self.kind = kind
        self.error = error
        self.retry_after = retry_after

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
    session: aiohttp.ClientSession,
    request: OutgoingRequest,
    *,
    deadline: float,
    now: float,
    timer: DeadlineTimer,
) -> Outcome:
    """Send ``request`` on ``session`` (redirects not followed); give up after ``deadline``
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
    try:
        response = await session.request(
            request.method,
            request.url,
            headers=request.headers,
            data=request.body if request.body or request.method in BODY_METHODS else None,
            allow_redirects=False,
        )
        try:
            return await _read(response, now)
        finally:
            response.close()
    except asyncio.CancelledError:
        if timer.stop(task) and task.uncancel() == 0:  # the deadline, not a shutdown
            return Outcome(
                None, "timeout", f"no response within the dispatch deadline ({deadline:g}s)"
            )
        raise
    except TimeoutError as exc:  # a socket-level timeout
        return Outcome(None, "timeout", f"timed out: {_describe(exc)}")
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(None, "error", _describe(exc))
    except ValueError as exc:  # a URL or header aiohttp refuses to send
        return Outcome(None, "error", f"cannot build the request: {_describe(exc)}")
    finally:
        timer.stop(task)


def _unsendable(request: OutgoingRequest) -> str:
    """Why ``request`` cannot go on the wire as it is ('' when it can): header names and
    values must be ASCII, values without control characters but tab (RFC 9110 5.5)."""
    headers = request.headers
    values = "".join(headers.values())
    if values.isascii() and values.isprintable() and "".join(headers).isascii():
        return ""  # one check for all of them: the usual case (no tab either)
    for name, value in headers.items():
        if not (name.isascii() and _FIELD_OK(value)):
            return f"header {name[:64]!r} has a value that cannot be sent"
    return ""  # a tab, which the one check above does not let through


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:SNIPPET_BYTES]


async def _read(response: aiohttp.ClientResponse, now: float) -> Outcome:
    status = response.status
    kind = f"{status // 100}xx" if 100 <= status < 600 else "error"
    content = response.content
    if 200 <= status < 300:
        read = 0
        while read <= MAX_SUCCESS_BODY:
            chunk = await content.readany()
            if not chunk:
                break
            read += len(chunk)
        return Outcome(status, kind)
    snippet = b""
    while len(snippet) < SNIPPET_BYTES:
        chunk = await content.readany()
        if not chunk:
            break
        snippet += chunk
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    text = snippet[:SNIPPET_BYTES].decode("utf-8", "replace")
    return Outcome(status, kind, text, retry_after)


class Sender(Protocol):
    """Makes the HTTP request of one attempt: in this event loop or in a delivery process."""

    async def send(self, request: OutgoingRequest, *, deadline: float, now: float) -> Outcome:
        """:func:`send` on the sender's connection pool; never raises for transport errors."""
        ...


class SessionSender:
    """A :class:`Sender` on an aiohttp session of this event loop, with one deadline timer
    for all its attempts."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.timer = DeadlineTimer()

    async def send(self, request: OutgoingRequest, *, deadline: float, now: float) -> Outcome:
        """See :func:`send`; ``deadline`` in seconds, ``now`` Unix seconds."""
        return await send(self.session, request, deadline=deadline, now=now, timer=self.timer)
