"""One HTTP attempt and its outcome (proxy/engines/local/attempt.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from proxy.engines.delivery import OutgoingRequest
from proxy.engines.local.attempt import parse_retry_after, send

pytestmark = pytest.mark.anyio

REQUEST = OutgoingRequest("POST", "http://backend.test/x", {"content-type": "a/b"}, b"hi")


def test_retry_after_seconds() -> None:
    """Delta seconds are taken as they are."""
    assert parse_retry_after("3", now=0) == 3


def test_retry_after_http_date() -> None:
    """An HTTP date counts from ``now``; a date in the past means no wait."""
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:30 GMT", now=now) == pytest.approx(10)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0


def test_retry_after_garbage_is_ignored() -> None:
    """Missing or unreadable values give None."""
    assert parse_retry_after(None, now=0) is None
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("-5", now=0) is None


def test_retry_after_is_capped_at_30_days() -> None:
    """An absurd Retry-After is capped at the 30-day schedule limit."""
    assert parse_retry_after("999999999", now=0) == 30 * 86400


async def client(handler: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))  # type: ignore[arg-type]


async def test_success_and_snippet() -> None:
    """2xx is success; a failure keeps a snippet of at most 1 KiB of the body."""
    ok = await send(await client(lambda r: httpx.Response(204)), REQUEST, deadline=5, now=0)
    assert (ok.success, ok.kind) == (True, "2xx")
    bad = await send(
        await client(lambda r: httpx.Response(500, text="x" * 5000)), REQUEST, deadline=5, now=0
    )
    assert (bad.success, bad.executed, bad.kind, len(bad.error)) == (False, False, "5xx", 1024)


async def test_503_retry_after_is_read() -> None:
    """A 503's Retry-After is part of the outcome and marks it as throttling."""
    outcome = await send(
        await client(lambda r: httpx.Response(503, headers={"retry-after": "7"})),
        REQUEST,
        deadline=5,
        now=0,
    )
    assert (outcome.throttles, outcome.retry_after) == (True, 7)


async def test_deadline_ends_the_attempt() -> None:
    """No answer within the deadline is a timeout, not an exception."""

    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200)

    outcome = await send(await client(hang), REQUEST, deadline=0.05, now=0)
    assert (outcome.status, outcome.kind) == (None, "timeout")
    assert "deadline" in outcome.error


async def test_unsendable_request_is_a_failed_attempt() -> None:
    """A stored request httpx cannot build (non-ASCII header) is an error outcome, not a
    crash that would leave the task leased forever."""
    poison = OutgoingRequest("POST", "http://backend.test/x", {"x-name": "caf\u00e9"}, b"")
    outcome = await send(await client(lambda r: httpx.Response(200)), poison, deadline=5, now=0)
    assert (outcome.status, outcome.kind, outcome.success) == (None, "error", False)
    assert "cannot build" in outcome.error
