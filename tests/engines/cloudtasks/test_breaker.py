"""The CreateTask circuit breaker, on an injected clock."""

from __future__ import annotations

from proxy.engines.cloudtasks.breaker import PROBE_TIMEOUT, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Breaker, Clock]:
    clock = Clock()
    return Breaker(failures=3, open_for=10.0, clock=clock), clock


def test_opens_after_n_failures_in_a_row() -> None:
    """Two failures keep it closed; the third opens it and nobody may call."""
    breaker, _ = make()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.closes_in() == 10.0


def test_a_success_resets_the_count() -> None:
    """Failures must be consecutive: a success between them starts the count again."""
    breaker, _ = make()
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"


def test_half_open_lets_one_probe_through_and_its_success_closes() -> None:
    """After the open interval one caller (the probe) is let through, the next is not;
    the probe's success closes the breaker for everybody."""
    breaker, clock = make()
    for _ in range(3):
        breaker.failure()
    clock.now += 9.9
    assert not breaker.allow()
    clock.now += 0.2
    assert breaker.state == "half_open"
    assert breaker.closes_in() == 0.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_a_failed_probe_opens_it_again_for_the_whole_interval() -> None:
    """The probe fails: open again, counted from the failure."""
    breaker, clock = make()
    for _ in range(3):
        breaker.failure()
    clock.now += 10
    assert breaker.allow()
    clock.now += 1
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.closes_in() == 10.0
    clock.now += 10
    assert breaker.allow()


def test_a_probe_that_never_reports_is_replaced() -> None:
    """A probe lost without an answer does not hold the breaker half-open forever."""
    breaker, clock = make()
    for _ in range(3):
        breaker.failure()
    clock.now += 10
    assert breaker.allow()
    clock.now += PROBE_TIMEOUT - 1
    assert not breaker.allow()
    clock.now += 2
    assert breaker.allow()


def test_failures_while_open_do_not_extend_it() -> None:
    """Stragglers that fail while it is open (no probe out) leave the interval alone."""
    breaker, clock = make()
    for _ in range(3):
        breaker.failure()
    clock.now += 5
    breaker.failure()
    assert breaker.closes_in() == 5.0
