"""The circuit breaker in front of CreateTask, used while the spool is on.

*closed*: calls go to Cloud Tasks; ``failures`` transient failures in a row open it.
*open*: nobody calls Cloud Tasks (requests go straight to the spool) for ``open_for``
seconds. *half-open*: the next caller, and only it, is let through as the probe; its
success closes the breaker, its failure opens it again for another ``open_for``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "half_open", "open"]
STATE_VALUES: dict[BreakerState, int] = {"closed": 0, "half_open": 1, "open": 2}
PROBE_TIMEOUT = 30.0  # seconds after which a probe that never reported is given up


class Breaker:
    """Counts consecutive CreateTask failures; ``clock`` returns monotonic seconds."""

    def __init__(
        self, *, failures: int, open_for: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.open_for = open_for
        self.clock = clock
        self._in_a_row = 0
        self._opened_at: float | None = None  # None: closed
        self._probe_since: float | None = None  # a probe is out since then

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open`` (the open interval is over)."""
        if self._opened_at is None:
            return "closed"
        if self.clock() - self._opened_at < self.open_for:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """Whether the caller may call Cloud Tasks now. In half-open, ``True`` once: that
        caller is the probe and must report :meth:`success` or :meth:`failure`."""
        if self._opened_at is None:
            return True
        now = self.clock()
        if now - self._opened_at < self.open_for:
            return False
        if self._probe_since is not None and now - self._probe_since < PROBE_TIMEOUT:
            return False
        self._probe_since = now
        return True

    def closes_in(self) -> float:
        """Seconds until a probe may go (0 when closed or due)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.open_for - self.clock())

    def success(self) -> None:
        """Cloud Tasks answered: close."""
        self._in_a_row = 0
        self._opened_at = self._probe_since = None

    def failure(self) -> None:
        """A transient failure: count it; open at the threshold, or again after a probe."""
        self._in_a_row += 1
        if self._opened_at is not None:
            if self._probe_since is not None:  # the probe failed
                self._opened_at, self._probe_since = self.clock(), None
            return
        if self._in_a_row >= self.failures:
            self._opened_at = self.clock()
