"""Every Prometheus metric of ingest-proxy, defined in one place.

Each app gets its own :class:`Metrics` on its own registry, so several proxies (tests,
benchmarks) can live in one process.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_BODY_BUCKETS = (0, 256, 1024, 4096, 16384, 65536, 102400, 262144, 1048576)
_ATTEMPT_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    """The proxy's metrics on ``registry`` (a fresh one when omitted)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # ingress
        self.requests = Counter(
            "ingest_proxy_requests",
            "Ingress requests answered, by queue and HTTP status code.",
            ["queue", "code"],
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "ingest_proxy_requests_in_flight", "Ingress requests being handled now.", registry=r
        )
        self.request_body_bytes = Histogram(
            "ingest_proxy_request_body_bytes",
            "Size of accepted request bodies in bytes.",
            buckets=_BODY_BUCKETS,
            registry=r,
        )
        self.enqueue_seconds = Histogram(
            "ingest_proxy_enqueue_seconds",
            "Time to persist one task durably, by engine.",
            ["engine"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.enqueue_errors = Counter(
            "ingest_proxy_enqueue_errors",
            "Requests refused or not persisted, by reason (the error code sent).",
            ["reason"],
            registry=r,
        )
        self.cloudtasks_rpc_errors = Counter(
            "ingest_proxy_cloudtasks_rpc_errors",
            "Failed Cloud Tasks calls by method and gRPC status code, retried ones included.",
            ["method", "code"],
            registry=r,
        )
        # delivery (embedded engine)
        self.dispatches = Counter(
            "ingest_proxy_dispatches",
            "Delivery attempts by queue and outcome class (2xx, 3xx, 4xx, 5xx, error, timeout).",
            ["queue", "status_class"],
            registry=r,
        )
        self.delivery_seconds = Histogram(
            "ingest_proxy_delivery_seconds",
            "Duration of one delivery attempt, by queue.",
            ["queue"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.task_attempts = Histogram(
            "ingest_proxy_task_attempts",
            "Attempts a task took until it succeeded or was dead-lettered, by queue.",
            ["queue"],
            buckets=_ATTEMPT_BUCKETS,
            registry=r,
        )
        self.commit_batch_size = Histogram(
            "ingest_proxy_commit_batch_size",
            "Tasks written per SQLite transaction (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingest_proxy_queue_depth",
            "Tasks waiting or in flight, by queue.",
            ["queue"],
            registry=r,
        )
        self.oldest_task_age = Gauge(
            "ingest_proxy_oldest_task_age_seconds",
            "Age of the oldest task not yet delivered, by queue.",
            ["queue"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "ingest_proxy_dead_letters",
            "Tasks in the dead-letter table, by queue.",
            ["queue"],
            registry=r,
        )
        self.dispatch_rate = Gauge(
            "ingest_proxy_dispatch_rate",
            "Current token-bucket refill rate in dispatches per second (lowered after 429/503).",
            ["queue"],
            registry=r,
        )

    def register(self, collector: Collector) -> None:
        """Add a collector computed at scrape time (for example queue depth from SQLite)."""
        self.registry.register(collector)
