"""One timer for the dispatch deadlines of many attempts (proxy/engines/local/deadlines.py)."""

from __future__ import annotations

import asyncio

import pytest

from proxy.engines.local.deadlines import DeadlineTimer

pytestmark = pytest.mark.anyio


async def attempt(timer: DeadlineTimer, seconds: float, work: float) -> str:
    """What send() does: register, work, tell a deadline from another cancellation."""
    task = asyncio.current_task()
    assert task is not None
    timer.start(task, seconds)  # type: ignore[arg-type]
    try:
        await asyncio.sleep(work)
        return "done"
    except asyncio.CancelledError:
        if timer.stop(task) and task.uncancel() == 0:  # type: ignore[arg-type]
            return "deadline"
        raise
    finally:
        timer.stop(task)  # type: ignore[arg-type]


async def test_attempts_past_their_deadline_end_the_others_finish() -> None:
    """Of attempts sharing a timer, those that outlive their deadline are ended (and say
    so), those that finish in time are not touched."""
    timer = DeadlineTimer()
    results = await asyncio.gather(
        attempt(timer, 0.05, 30),
        attempt(timer, 10, 0.01),
        attempt(timer, 0.1, 30),
    )
    assert results == ["deadline", "done", "deadline"]


async def test_a_shorter_deadline_after_a_longer_one_still_fires() -> None:
    """The timer is re-armed when an attempt with an earlier deadline arrives."""
    timer = DeadlineTimer()
    long = asyncio.create_task(attempt(timer, 30, 30))
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        assert await attempt(timer, 0.05, 30) == "deadline"
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def test_another_cancellation_is_not_a_deadline() -> None:
    """A shutdown cancelling an attempt still cancels it: it is not reported as a timeout."""
    timer = DeadlineTimer()
    task = asyncio.create_task(attempt(timer, 30, 30))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_shutdown_at_the_deadline_is_still_a_cancellation() -> None:
    """Cancelled by its deadline and by a shutdown at once, an attempt is cancelled."""
    timer = DeadlineTimer()
    task = asyncio.create_task(attempt(timer, -1, 30))  # registered already past its deadline
    await asyncio.sleep(0)
    timer._sweep(asyncio.get_running_loop())  # the timer fires now: it cancels the task
    assert task.cancelling() == 1
    task.cancel()  # and so does the shutdown, before the task runs again
    with pytest.raises(asyncio.CancelledError):
        await task
