"""Cloud Tasks retry schedule: pure functions shared by every engine, and the one
decision of what follows an attempt (:func:`decide`), used by every dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from proxy.config.settings import RetrySettings


def backoff_delay(retry: RetrySettings, retry_index: int) -> float:
    """Seconds to wait after a failed attempt; ``retry_index`` 0 is the first retry.

    The interval starts at ``min_backoff``, doubles ``max_doublings`` times, then grows by
    ``2**max_doublings * min_backoff`` per retry, capped at ``max_backoff``
    (min 10 s, max 300 s, 3 doublings gives 10, 20, 40, 80, 160, 240, 300, 300 ...).
    """
    if retry_index < 0:
        raise ValueError("retry_index must be zero or more")
    doublings = retry.max_doublings
    if retry_index <= doublings:
        delay = retry.min_backoff * 2.0**retry_index
    else:
        delay = retry.min_backoff * 2.0**doublings * (retry_index - doublings + 1)
    return min(retry.max_backoff, delay)


def should_retry(
    retry: RetrySettings, *, attempts: int, first_attempt_at: float, now: float
) -> bool:
    """Whether a task that just failed its ``attempts``-th attempt gets another one.

    ``max_attempts`` counts the first attempt (-1: no limit); ``max_retry_duration`` is
    measured from the first attempt (0: no limit). A limit that is not set does not stop
    retries; when both are set, retries stop only once *both* are reached, as in Cloud
    Tasks. With neither set, retries go on until the task's retention runs out.
    """
    attempts_set = retry.max_attempts != -1
    duration_set = retry.max_retry_duration > 0
    attempts_reached = attempts_set and attempts >= retry.max_attempts
    duration_reached = duration_set and now - first_attempt_at >= retry.max_retry_duration
    if attempts_set and duration_set:
        return not (attempts_reached and duration_reached)
    return not (attempts_reached or duration_reached)


@dataclass(frozen=True, slots=True)
class Decision:
    """What follows an attempt: ``done`` (it succeeded), ``retry`` in ``delay`` seconds,
    or ``give_up`` (out of retries: a dead letter, or deleted as Cloud Tasks does)."""

    action: Literal["done", "retry", "give_up"]
    delay: float = 0.0


DONE = Decision("done")
GIVE_UP = Decision("give_up")


def decide(
    retry: RetrySettings,
    *,
    success: bool,
    retry_after: float | None,
    attempts: int,
    first_attempt_at: float,
    now: float,
) -> Decision:
    """The outcome of the ``attempts``-th attempt of a task, for every dispatcher.

    A success is done. A failure is retried unless :func:`should_retry` says no; the next
    attempt waits :func:`backoff_delay`, or the answer's ``Retry-After`` (seconds) when
    that is longer. ``first_attempt_at`` and ``now`` are Unix seconds.
    """
    if success:
        return DONE
    if not should_retry(retry, attempts=attempts, first_attempt_at=first_attempt_at, now=now):
        return GIVE_UP
    delay = backoff_delay(retry, attempts - 1)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return Decision("retry", delay)
