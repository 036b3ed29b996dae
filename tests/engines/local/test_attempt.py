"""One HTTP attempt and its outcome (proxy/engines/local/attempt.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from proxy.engines.delivery import OutgoingRequest
from proxy.engines.http_client import ConnectionPool
from proxy.engines.local.attempt import parse_retry_after, send
from proxy.engines.local.deadlines import DeadlineTimer
from tests.support.loop_backend import Handler, Reply, Seen, loop_backend

pytestmark = pytest.mark.anyio


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


@contextlib.asynccontextmanager
async def backend(handler: Handler) -> AsyncIterator[tuple[str, ConnectionPool]]:
    """A real backend on the test's loop and a delivery pool; yields the URL to post to."""
    async with loop_backend(handler) as server:
        pool = ConnectionPool(4)
        try:
            yield f"{server.url}/x", pool
        finally:
            await pool.close()


def post(url: str, **headers: str) -> OutgoingRequest:
    return OutgoingRequest("POST", url, {"content-type": "a/b", **headers}, b"hi")


async def test_success_and_snippet() -> None:
    """2xx is success; a failure keeps a snippet of at most 1 KiB of the body."""
    async with backend(lambda r: Reply(204)) as (url, pool):
        ok = await send(pool, post(url), deadline=5, now=0, timer=DeadlineTimer())
    assert (ok.success, ok.kind) == (True, "2xx")
    async with backend(lambda r: Reply(500, body=b"x" * 5000)) as (url, pool):
        bad = await send(pool, post(url), deadline=5, now=0, timer=DeadlineTimer())
    assert (bad.success, bad.executed, bad.kind, len(bad.error)) == (False, False, "5xx", 1024)


async def test_503_retry_after_is_read() -> None:
    """A 503's Retry-After is part of the outcome and marks it as throttling."""
    async with backend(lambda r: Reply(503, headers={"retry-after": "7"})) as (url, pool):
        outcome = await send(pool, post(url), deadline=5, now=0, timer=DeadlineTimer())
    assert (outcome.throttles, outcome.retry_after) == (True, 7)


async def test_deadline_ends_the_attempt() -> None:
    """No answer within the deadline is a timeout, not an exception."""

    async def hang(request: Seen) -> Reply:
        await asyncio.sleep(30)
        return Reply(200)

    async with backend(hang) as (url, pool):
        outcome = await send(pool, post(url), deadline=0.05, now=0, timer=DeadlineTimer())
    assert (outcome.status, outcome.kind) == (None, "timeout")
    assert "deadline" in outcome.error


async def test_unsendable_request_is_a_failed_attempt() -> None:
    """A stored request that cannot go on the wire (non-ASCII or control characters in a
    header) is an error outcome, not a crash that would leave the task leased forever;
    nothing reaches the backend."""
    async with backend(lambda r: Reply(200)) as (url, pool):
        for value in ("caf\u00e9", "a\r\nx-injected: 1"):
            outcome = await send(
                pool, post(url, **{"x-name": value}), deadline=5, now=0, timer=DeadlineTimer()
            )
            assert (outcome.status, outcome.kind, outcome.success) == (None, "error", False)
            assert "cannot build" in outcome.error


async def test_a_tab_in_a_header_value_is_sent() -> None:
    """A tab is allowed inside a field value (RFC 9110 5.5): the request goes out as is."""
    async with backend(lambda r: Reply(204)) as (url, pool):
        outcome = await send(
            pool, post(url, **{"x-name": "a\tb"}), deadline=5, now=0, timer=DeadlineTimer()
        )
    assert (outcome.status, outcome.kind) == (204, "2xx")
