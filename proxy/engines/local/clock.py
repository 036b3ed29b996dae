"""Time for the embedded engine, injectable so the scheduler can be tested without sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback scheduled by :meth:`Clock.call_later`."""

    def cancel(self) -> None:
        """Do not call it (nothing happens if it ran already)."""


class Clock(Protocol):
    """Wall time for ETAs, monotonic time for rates, and a way to wait."""

    def time(self) -> float:
        """Unix seconds (wall clock): task ETAs and ages."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go backwards: token buckets and throttling."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""

    def call_later(
        self, loop: asyncio.AbstractEventLoop, seconds: float, callback: Callable[[], None]
    ) -> Timer:
        """Call ``callback()`` on ``loop`` after ``seconds`` (cheaper than a sleeping task)."""
        ...


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_later(
        self, loop: asyncio.AbstractEventLoop, seconds: float, callback: Callable[[], None]
    ) -> Timer:
        return loop.call_later(seconds, callback)


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A clock that moves only when :meth:`advance` is called (for tests).

    ``sleep`` returns, and a ``call_later`` callback runs, once the clock has been
    advanced past its deadline; wall and monotonic time move together, starting at
    ``start`` (Unix seconds).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = start - 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None] | _ManualTimer]] = []
        self._ids = itertools.count()

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now - self._offset

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._ids), future))
        await future

    def call_later(
        self, loop: asyncio.AbstractEventLoop, seconds: float, callback: Callable[[], None]
    ) -> Timer:
        if seconds <= 0:
            return loop.call_soon(callback)
        timer = _ManualTimer(callback)
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._ids), timer))
        return timer

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``; wake every sleeper and run every callback now
        due, in deadline order."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, waiter = heapq.heappop(self._sleepers)
            if isinstance(waiter, _ManualTimer):
                if not waiter.cancelled:
                    waiter.callback()
            elif not waiter.done():
                waiter.set_result(None)
