"""Token bucket and 429/503 throttle (proxy/engines/local/bucket.py)."""

from __future__ import annotations

import pytest

from proxy.engines.local.bucket import Throttle, TokenBucket


def test_bucket_starts_full() -> None:
    """A new bucket allows a burst of exactly ``burst`` dispatches."""
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.try_take(0) for _ in range(4)] == [True, True, True, False]


def test_bucket_refills_at_the_rate() -> None:
    """An empty bucket at 2/s has one token again after 0.5 s, not before."""
    bucket = TokenBucket(rate=2, burst=3, now=0)
    for _ in range(3):
        bucket.try_take(0)
    assert bucket.wait_time(0) == pytest.approx(0.5)
    assert not bucket.try_take(0.49)
    assert bucket.try_take(0.5)


def test_bucket_never_holds_more_than_burst() -> None:
    """Idle time does not save up more than ``burst`` tokens."""
    bucket = TokenBucket(rate=10, burst=4, now=0)
    assert bucket.available(1000) == 4


def test_bucket_rate_over_a_long_run() -> None:
    """Taking tokens as soon as they exist gives burst + rate * time dispatches."""
    bucket = TokenBucket(rate=20, burst=4, now=0)
    taken = sum(bucket.try_take(t / 1000) for t in range(10_001))  # every ms for 10 s
    assert taken == 4 + 200


def test_set_rate_keeps_earned_tokens() -> None:
    """Lowering the rate keeps tokens already earned and refills slower afterwards."""
    bucket = TokenBucket(rate=10, burst=10, now=0)
    for _ in range(10):
        bucket.try_take(0)
    bucket.set_rate(1, now=0.5)  # 5 tokens earned at 10/s
    assert bucket.available(0.5) == pytest.approx(5)
    assert bucket.available(1.5) == pytest.approx(6)


def test_bucket_rejects_nonsense() -> None:
    """A zero rate or an empty bucket is refused."""
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(rate=0, burst=1, now=0)


def test_throttle_halves_once_per_burst_of_rejections() -> None:
    """Several 429/503 within a second halve the rate once; a later one halves it again."""
    throttle = Throttle()
    throttle.throttled(0)
    throttle.throttled(0.5)
    assert throttle.factor(0.6) == 0.5
    throttle.throttled(1.2)
    assert throttle.factor(1.2) == 0.25


def test_throttle_holds_for_retry_after_then_recovers() -> None:
    """The lowered rate holds for the Retry-After, then doubles every recovery step."""
    throttle = Throttle()
    throttle.throttled(0, retry_after=30)
    assert throttle.factor(30 + Throttle.RECOVERY_STEP - 0.01) == 0.5
    assert throttle.factor(30 + Throttle.RECOVERY_STEP) == 1.0


def test_throttle_recovers_step_by_step() -> None:
    """From 1/4 the factor returns to 1 in two recovery steps after the hold."""
    throttle = Throttle()
    throttle.throttled(0)
    throttle.throttled(1)
    hold_end = 1 + Throttle.HOLD
    assert throttle.factor(hold_end + Throttle.RECOVERY_STEP) == 0.5
    assert throttle.factor(hold_end + 2 * Throttle.RECOVERY_STEP) == 1.0


def test_throttle_has_a_floor() -> None:
    """However many rejections arrive, the queue keeps MIN_FACTOR of its rate."""
    throttle = Throttle()
    for second in range(20):
        throttle.throttled(float(second))
    assert throttle.factor(20) == Throttle.MIN_FACTOR
