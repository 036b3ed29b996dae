"""Per-queue rate control: a token bucket, and a throttle that slows a queue after
the backend answers 429 or 503."""

from __future__ import annotations

import math

_EPSILON = 1e-9  # float error must not delay a token that is due


class TokenBucket:
    """Cloud Tasks rate limit: holds up to ``burst`` tokens, refills at ``rate`` per second,
    one token per dispatch. Starts full. Times are monotonic seconds."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
            self._updated = now

    def available(self, now: float) -> float:
        """Tokens in the bucket at ``now`` (fractional)."""
        self._refill(now)
        return self._tokens

    def try_take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self._tokens >= 1 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1)
            return True
        return False

    def wait_time(self, now: float, tokens: int = 1) -> float:
        """Seconds until ``tokens`` (at most ``burst``) are available (0 when they are now)."""
        self._refill(now)
        want = min(tokens, self.burst)
        return 0.0 if self._tokens >= want - _EPSILON else (want - self._tokens) / self.rate

    def set_rate(self, rate: float, now: float) -> None:
        """Change the refill rate from ``now`` on (tokens already earned are kept)."""
        self._refill(now)
        self.rate = rate


class Throttle:
    """How much of the configured rate a queue may use, between ``MIN_FACTOR`` and 1.

    Each 429 or 503 from the backend halves the factor (answers within ``CUT_INTERVAL``
    seconds of the last cut count as one signal, so a burst of rejections of concurrent
    attempts halves it once) and holds it for ``HOLD`` seconds or the response's
    Retry-After, whichever is longer. After that, every ``RECOVERY_STEP`` seconds without
    another 429/503 doubles it again until the full rate is back.
    """

    MIN_FACTOR = 1 / 32
    CUT_INTERVAL = 1.0
    HOLD = 5.0
    RECOVERY_STEP = 5.0

    def __init__(self) -> None:
        self._factor = 1.0
        self._last_cut = -math.inf
        self._hold_until = -math.inf

    def throttled(self, now: float, retry_after: float | None = None) -> None:
        """Record a 429/503 answer at monotonic time ``now``."""
        self._settle(now)
        if now - self._last_cut >= self.CUT_INTERVAL:
            self._factor = max(self.MIN_FACTOR, self._factor / 2)
            self._last_cut = now
        self._hold_until = max(self._hold_until, now + max(self.HOLD, retry_after or 0.0))

    def factor(self, now: float) -> float:
        """The share of the configured rate allowed at ``now``."""
        self._settle(now)
        return self._factor

    def _settle(self, now: float) -> None:
        while self._factor < 1.0 and now >= self._hold_until + self.RECOVERY_STEP:
            self._factor = min(1.0, self._factor * 2)
            self._hold_until += self.RECOVERY_STEP
