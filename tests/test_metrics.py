"""The lock-free metric families of the ingress hot path (proxy/metrics.py)."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from proxy.metrics import LoopCounter, LoopHistogram

BUCKETS = (0, 256, 1024, 102400, 1048576)


def _exposition(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if "_created" not in line]


def test_loop_families_expose_what_prometheus_client_would() -> None:
    """The same observations give the same exposition lines as prometheus_client's own
    Counter and Histogram (bucket labels, cumulative counts, sums, labels), so dashboards
    and alerts cannot tell them apart."""
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    for registry, histogram, counter in (
        (theirs, Histogram, Counter),
        (ours, LoopHistogram, LoopCounter),
    ):
        sizes = histogram("body_bytes", "Body sizes.", buckets=BUCKETS, registry=registry)
        latency = histogram(
            "enqueue_seconds", "Latency.", ["engine"], buckets=(0.001, 0.5, 1), registry=registry
        )
        answered = counter("requests", "Answered.", ["queue", "code"], registry=registry)
        for size in (0, 1, 256, 257, 102400, 5_000_000):
            sizes.observe(size)
        for seconds in (0.0001, 0.001, 0.7, 99.0):
            latency.labels("local").observe(seconds)
        latency.labels("cloudtasks").observe(0.2)
        answered.labels("q", "202").inc()
        answered.labels("q", "202").inc()
        answered.labels("q", "400").inc(3)
    assert _exposition(ours) == _exposition(theirs)
    assert 'body_bytes_bucket{le="1.048576e+06"} 5.0' in _exposition(ours)


def test_loop_families_check_their_labels() -> None:
    """Wrong label counts and an unlabelled observe on a labelled family are errors."""
    registry = CollectorRegistry()
    latency = LoopHistogram("l", "L.", ["engine"], buckets=(1,), registry=registry)
    with pytest.raises(ValueError, match="labels"):
        latency.observe(1.0)
    with pytest.raises(ValueError, match="labels"):
        latency.labels("a", "b")
    with pytest.raises(ValueError, match="labels"):
        LoopCounter("c", "C.", ["queue"], registry=registry).labels()
