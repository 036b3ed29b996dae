"""Dispatch deadlines for many attempts from one timer.

``asyncio.timeout`` arms a timer per attempt: about 10 µs on uvloop, a tenth of what the
HTTP request itself costs. Attempts of one queue share their deadline, so one timer per
queue, re-armed for the earliest attempt still running, does the same work: an attempt
past its deadline has its task cancelled, and :meth:`DeadlineTimer.stop` tells that
cancellation apart from any other (a shutdown).
"""

from __future__ import annotations

import asyncio


class DeadlineTimer:
    """Cancels the tasks registered with :meth:`start` once their deadline has passed.

    An attempt ends within ``SLACK`` seconds after its deadline (the timer is not re-armed
    more often than that); every dispatch deadline is 15 s or more. Use it from one event
    loop at a time.
    """

    SLACK = 0.05  # seconds

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._when = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running event loop, asked for once (``asyncio.get_running_loop()`` makes a
        system call); a timer serves one loop at a time."""
        loop = self._loop
        if loop is None or loop.is_closed():
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def start(self, task: asyncio.Task[object], seconds: float) -> None:
        """Cancel ``task`` if it is still registered ``seconds`` from now."""
        loop = task.get_loop()
        due = loop.time() + seconds
        self._due[task] = due
        if self._handle is None or due < self._when - self.SLACK:
            self._arm(loop, due)

    def stop(self, task: asyncio.Task[object]) -> bool:
        """Unregister ``task``; return whether its deadline had passed (it was cancelled)."""
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._when = when
        self._handle = loop.call_at(when, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._handle = None
        now = loop.time()
        earliest = None
        for task, due in list(self._due.items()):
            if due <= now + self.SLACK / 2:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
            elif earliest is None or due < earliest:
                earliest = due
        if earliest is not None:
            self._arm(loop, max(earliest, now + self.SLACK))
