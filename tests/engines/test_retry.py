"""The Cloud Tasks retry schedule (proxy/engines/retry.py)."""

from __future__ import annotations

import pytest

from proxy.config.settings import RetrySettings
from proxy.engines.retry import backoff_delay, decide, should_retry


def test_worked_example_from_the_docs() -> None:
    """min 10 s, max 300 s, 3 doublings gives 10, 20, 40, 80, 160, 240, 300, 300."""
    retry = RetrySettings(min_backoff=10, max_backoff=300, max_doublings=3)
    assert [backoff_delay(retry, k) for k in range(8)] == [10, 20, 40, 80, 160, 240, 300, 300]


def test_defaults_double_from_100ms_to_the_one_hour_cap() -> None:
    """With the defaults the delay is 0.1 s * 2**k until it is capped at 3600 s (k = 16)."""
    retry = RetrySettings()
    assert backoff_delay(retry, 0) == pytest.approx(0.1)
    assert backoff_delay(retry, 15) == pytest.approx(3276.8)
    assert backoff_delay(retry, 16) == 3600
    assert backoff_delay(retry, 40) == 3600


def test_zero_doublings_grow_linearly() -> None:
    """max_doublings 0 means the interval grows by min_backoff per retry."""
    retry = RetrySettings(min_backoff=2, max_backoff=100, max_doublings=0)
    assert [backoff_delay(retry, k) for k in range(4)] == [2, 4, 6, 8]


def test_negative_retry_index_is_refused() -> None:
    """A negative retry index is a programming error."""
    with pytest.raises(ValueError, match="retry_index"):
        backoff_delay(RetrySettings(), -1)


def test_max_attempts_counts_the_first_attempt() -> None:
    """max_attempts 3 allows two retries: a retry after attempts 1 and 2, none after 3."""
    retry = RetrySettings(max_attempts=3)
    assert should_retry(retry, attempts=2, first_attempt_at=0, now=1e6)
    assert not should_retry(retry, attempts=3, first_attempt_at=0, now=0)


def test_retry_duration_alone_stops_retries() -> None:
    """With unlimited attempts, retries stop once max_retry_duration has passed."""
    retry = RetrySettings(max_attempts=-1, max_retry_duration=60)
    assert should_retry(retry, attempts=1000, first_attempt_at=100, now=159)
    assert not should_retry(retry, attempts=2, first_attempt_at=100, now=160)


def test_both_limits_must_be_reached() -> None:
    """With both limits set, retries go on until attempts *and* duration are used up."""
    retry = RetrySettings(max_attempts=3, max_retry_duration=60)
    assert should_retry(retry, attempts=5, first_attempt_at=0, now=30)
    assert should_retry(retry, attempts=2, first_attempt_at=0, now=120)
    assert not should_retry(retry, attempts=3, first_attempt_at=0, now=60)


def test_no_limits_retry_forever() -> None:
    """max_attempts -1 and no retry duration never stop retrying."""
    retry = RetrySettings(max_attempts=-1, max_retry_duration=0)
    assert should_retry(retry, attempts=10_000, first_attempt_at=0, now=1e9)


def test_a_success_is_done_whatever_the_limits() -> None:
    retry = RetrySettings(max_attempts=1)
    decision = decide(
        retry, success=True, retry_after=None, attempts=5, first_attempt_at=0.0, now=1.0
    )
    assert decision.action == "done"


def test_a_failure_waits_the_backoff_of_its_retry_index() -> None:
    retry = RetrySettings(min_backoff=10, max_backoff=300, max_doublings=3)
    decisions = [
        decide(retry, success=False, retry_after=None, attempts=n, first_attempt_at=0.0, now=1.0)
        for n in (1, 2, 5)
    ]
    assert [(d.action, d.delay) for d in decisions] == [
        ("retry", 10.0),
        ("retry", 20.0),
        ("retry", 160.0),
    ]


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not() -> None:
    retry = RetrySettings(min_backoff=10, max_backoff=300)
    longer = decide(retry, success=False, retry_after=42.0, attempts=1, first_attempt_at=0, now=0)
    shorter = decide(retry, success=False, retry_after=1.0, attempts=1, first_attempt_at=0, now=0)
    assert (longer.action, longer.delay) == ("retry", 42.0)
    assert (shorter.action, shorter.delay) == ("retry", 10.0)


def test_a_failure_past_the_limits_gives_up() -> None:
    retry = RetrySettings(max_attempts=3, max_retry_duration=0)
    last = decide(retry, success=False, retry_after=5.0, attempts=3, first_attempt_at=0, now=9)
    before = decide(retry, success=False, retry_after=None, attempts=2, first_attempt_at=0, now=9)
    assert last.action == "give_up"
    assert before.action == "retry"
