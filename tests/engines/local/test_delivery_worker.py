"""Deliveries through a real delivery process (proxy/engines/local/delivery_worker.py and
delivery_process.py): the HTTP request leaves from another process, the outcome comes back."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from proxy.engines.delivery import OutgoingRequest
from proxy.engines.local.delivery_worker import LOST, DeliveryWorker
from proxy.errors import EngineUnavailableError
from tests.support.loop_backend import Reply, Seen, loop_backend

pytestmark = pytest.mark.anyio
WAIT = 30.0  # seconds for anything to happen


def post(url: str, body: bytes = b"payload") -> OutgoingRequest:
    return OutgoingRequest("POST", url, {"content-type": "text/plain", "x-a": "1, 2"}, body)


async def test_a_request_goes_out_from_the_process_and_its_outcome_comes_back() -> None:
    """Method, path, headers and body reach the backend as given; status, snippet and
    Retry-After come back; the backend sees a connection from another process."""
    async with loop_backend(lambda r: Reply(503, {"retry-after": "7"}, b"busy")) as backend:
        worker = DeliveryWorker([4, 2])
        await worker.start()
        try:
            async with asyncio.timeout(WAIT):
                outcome = await worker.send(1, post(f"{backend.url}/p?q=1"), deadline=20, now=0)
        finally:
            await worker.aclose()
    assert (outcome.status, outcome.kind, outcome.error, outcome.retry_after) == (
        503, "5xx", "busy", 7
    )  # fmt: skip
    (seen,) = backend.seen
    assert (seen.method, seen.path_qs, seen.content) == ("POST", "/p?q=1", b"payload")
    assert seen.headers["x-a"] == "1, 2"
    assert seen.headers["content-type"] == "text/plain"


async def test_the_deadline_is_kept_in_the_process() -> None:
    """No answer within the deadline is a timeout outcome."""

    async def hang(request: Seen) -> Reply:
        await asyncio.sleep(WAIT)
        return Reply()

    async with loop_backend(hang) as backend:
        worker = DeliveryWorker([1])
        await worker.start()
        try:
            async with asyncio.timeout(WAIT):
                outcome = await worker.send(0, post(backend.url), deadline=0.2, now=0)
        finally:
            await worker.aclose()
    assert (outcome.status, outcome.kind) == (None, "timeout")


async def test_a_cancelled_attempt_is_cancelled_and_the_process_goes_on() -> None:
    """Cancelling an attempt (a shutdown's drain) cancels it; the next one works."""
    gate = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: Seen) -> Reply:
        arrived.set()
        await gate.wait()
        return Reply()

    async with loop_backend(slow) as backend:
        worker = DeliveryWorker([2])
        await worker.start()
        try:
            attempt = asyncio.create_task(worker.send(0, post(backend.url), deadline=20, now=0))
            async with asyncio.timeout(WAIT):
                await arrived.wait()
            attempt.cancel()
            with pytest.raises(asyncio.CancelledError):
                await attempt
            gate.set()
            backend.handler = lambda r: Reply(204)
            async with asyncio.timeout(WAIT):
                outcome = await worker.send(0, post(backend.url), deadline=20, now=0)
        finally:
            await worker.aclose()
    assert outcome.status == 204


async def test_a_dead_process_fails_its_attempts_and_is_replaced() -> None:
    """Killed mid-attempt, the process's attempts end as failed attempts (retried by the
    dispatcher like any other), and a new process takes the next ones."""
    arrived = asyncio.Event()

    async def hang(request: Seen) -> Reply:
        arrived.set()
        await asyncio.sleep(WAIT)
        return Reply()

    async with loop_backend(hang) as backend:
        worker = DeliveryWorker([2])
        await worker.start()
        try:
            first = worker._process
            assert first is not None
            attempt = asyncio.create_task(worker.send(0, post(backend.url), deadline=20, now=0))
            async with asyncio.timeout(WAIT):
                await arrived.wait()
            os.kill(first.pid, signal.SIGKILL)
            async with asyncio.timeout(WAIT):
                lost = await attempt
            assert (lost.status, lost.kind, lost.error) == (None, "error", LOST)
            backend.handler = lambda r: Reply(200)
            async with asyncio.timeout(WAIT):
                again = await worker.send(0, post(backend.url), deadline=20, now=0)
            assert again.status == 200
            assert worker._process is not None
            assert worker._process.pid != first.pid
        finally:
            await worker.aclose()


async def test_closing_stops_the_process() -> None:
    """aclose() leaves no process behind, and later sends fail without waiting."""
    worker = DeliveryWorker([1])
    await worker.start()
    process = worker._process
    assert process is not None
    await worker.aclose()
    assert process.poll() is not None
    outcome = await worker.send(0, post("http://127.0.0.1:9/"), deadline=20, now=0)
    assert (outcome.status, outcome.kind) == (None, "error")


async def test_a_process_that_dies_while_starting_fails_the_start() -> None:
    """No attempt is handed to a process before it says it is ready; one that stops before
    that (here: a log level it cannot use) makes start() fail at once instead of waiting."""
    worker = DeliveryWorker([1], log_level="no-such-level")
    with pytest.raises(EngineUnavailableError, match="stopped while starting"):
        async with asyncio.timeout(WAIT):
            await worker.start()
    await worker.aclose()
    outcome = await worker.send(0, post("http://127.0.0.1:9/"), deadline=20, now=0)
    assert (outcome.status, outcome.kind) == (None, "error")
