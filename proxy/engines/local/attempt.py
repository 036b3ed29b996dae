"""One delivery attempt over HTTP, and what it tells the scheduler."""

from __future__ import annotations

import asyncio
import email.utils
import math

import httpx

from proxy.engines.delivery import OutgoingRequest

SNIPPET_BYTES = 1024
MAX_SUCCESS_BODY = 1024 * 1024  # read at most this much of a 2xx body, then drop the connection
MAX_RETRY_AFTER = 30 * 86400.0


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
    client: httpx.AsyncClient, request: OutgoingRequest, *, deadline: float, now: float
) -> Outcome:
    """Send ``request``; give up after ``deadline`` seconds in total. Never raises for
    transport problems: they become an :class:`Outcome` without a status."""
    try:
        outgoing = httpx.Request(
            request.method, request.url, headers=request.headers, content=request.body
        )
    except (ValueError, TypeError, httpx.HTTPError) as exc:  # UnicodeEncodeError is a ValueError
        # A stored task that can never be sent: a failed attempt, so retries and the
        # dead-letter table deal with it instead of it cycling unseen.
        return Outcome(None, "error", f"cannot build the request: {type(exc).__name__}: {exc}")
    try:
        async with asyncio.timeout(deadline):
            response = await client.send(outgoing, stream=True)
            try:
                return await _read(response, now)
            finally:
                await response.aclose()
    except TimeoutError:
        return Outcome(None, "timeout", f"no response within the dispatch deadline ({deadline:g}s)")
    except httpx.TimeoutException as exc:
        return Outcome(None, "timeout", f"timed out: {type(exc).__name__}")
    except httpx.HTTPError as exc:
        return Outcome(None, "error", f"{type(exc).__name__}: {exc}"[:SNIPPET_BYTES])


async def _read(response: httpx.Response, now: float) -> Outcome:
    status = response.status_code
    kind = f"{status // 100}xx" if 100 <= status < 600 else "error"
    if 200 <= status < 300:
        read = 0
        async for chunk in response.aiter_bytes():
            read += len(chunk)
            if read > MAX_SUCCESS_BODY:
                break
        return Outcome(status, kind)
    snippet = b""
    async for chunk in response.aiter_bytes():
        snippet += chunk
        if len(snippet) >= SNIPPET_BYTES:
            break
    retry_after = None
    if status in (429, 503):
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
    text = snippet[:SNIPPET_BYTES].decode("utf-8", "replace")
    return Outcome(status, kind, text, retry_after)
