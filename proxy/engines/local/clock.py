"""Time for the embedded engine, injectable so the scheduler can be tested without sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


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


class SystemClock:
    """The real clock."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ManualClock:
    """A clock that moves only when :meth:`advance` is called (for tests).

    ``sleep`` returns once the clock has been advanced past its deadline; wall and
    monotonic time move together, starting at ``start`` (Unix seconds).
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._offset = start - 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
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

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds`` and wake every sleeper now due."""
        self._now += seconds
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
