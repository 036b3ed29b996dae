"""Every Prometheus metric of ingest-proxy, defined in one place.

Each app gets its own :class:`Metrics` on its own registry, so several proxies (tests,
benchmarks) can live in one process. Beside the proxy's own families, each registry has
the standard process (CPU, memory, open files), platform and garbage-collector ones, and
no ``*_created`` series (counters' creation times, which no dashboard or alert reads).
Counters that alerts take ``rate()`` of have their label values at 0 from the start: a
series that appears with its first error would hide that error from ``rate()``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from proxy.errors import ConfigError, ProxyError
from proxy.logsink import dropped_total

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)
_BODY_BUCKETS = (0, 256, 1024, 4096, 16384, 65536, 102400, 262144, 1048576)
_ATTEMPT_BUCKETS = (1, 2, 3, 5, 10, 20, 50, 100)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# How prometheus_client writes a bucket's "le" label (1.0, 0.005, 1.048576e+06).
_le_label: Callable[[float], str] = floatToGoString


class Metrics:
    """The proxy's metrics on ``registry`` (a fresh one when omitted)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        _no_created_series()  # process-wide, and the same for every registry
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        if GC_COLLECTOR is not None:  # absent on interpreters without gc.get_stats
            GCCollector(registry=r)
        # ingress
        self.requests = LoopCounter(
            "ingest_proxy_requests",
            "Ingress requests answered, by queue and HTTP status code.",
            ["queue", "code"],
            registry=r,
        )
        self.duplicate_requests = LoopCounter(
            "ingest_proxy_duplicate_requests",
            "Requests answered 202 without storing a task, by queue: their Idempotency-Key"
            " was seen within the de-dup window, and the answer names the first task. Part of"
            ' ingest_proxy_requests_total{code="202"}; new tasks are that minus this.',
            ["queue"],
            registry=r,
        )
        self.requests_in_flight = Gauge(
            "ingest_proxy_requests_in_flight", "Ingress requests being handled now.", registry=r
        )
        self.request_body_bytes = LoopHistogram(
            "ingest_proxy_request_body_bytes",
            "Size of accepted request bodies in bytes.",
            buckets=_BODY_BUCKETS,
            registry=r,
        )
        self.enqueue_seconds = LoopHistogram(
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
        for reason in _refusal_codes():
            self.enqueue_errors.labels(reason)
        self.cloudtasks_rpc_errors = Counter(
            "ingest_proxy_cloudtasks_rpc_errors",
            "Failed Cloud Tasks calls by method and gRPC status code, retried ones included.",
            ["method", "code"],
            registry=r,
        )
        # the Cloud Tasks engine's spool (cloudtasks.spool); at 0 without one
        self.spool_tasks = Gauge(
            "ingest_proxy_spool_tasks",
            "Requests in the Cloud Tasks engine's spool, not yet forwarded to Cloud Tasks.",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "ingest_proxy_spool_bytes",
            "Bytes of the CreateTask requests in the spool.",
            registry=r,
        )
        self.spool_oldest_age = Gauge(
            "ingest_proxy_spool_oldest_age_seconds",
            "Seconds the oldest request in the spool has waited there (0 when empty).",
            registry=r,
        )
        self.spooled = Counter(
            "ingest_proxy_spooled",
            "Requests answered 202 from the spool, by reason (deadline: CreateTask failed"
            " until the enqueue deadline; breaker: the circuit breaker was open).",
            ["reason"],
            registry=r,
        )
        self.spool_forwarded = Counter(
            "ingest_proxy_spool_forwarded",
            "Spooled requests Cloud Tasks took, by outcome (created; already_existed: an"
            " earlier CreateTask had landed).",
            ["outcome"],
            registry=r,
        )
        for label in ("deadline", "breaker"):
            self.spooled.labels(label)
        for label in ("created", "already_existed"):
            self.spool_forwarded.labels(label)
        self.spool_breaker_state = Gauge(
            "ingest_proxy_spool_breaker_state",
            "The CreateTask circuit breaker: 0 closed, 1 half-open, 2 open.",
            registry=r,
        )
        # delivery (embedded engine), counted on the dispatchers' event loop
        self.dispatches = LoopCounter(
            "ingest_proxy_dispatches",
            "Delivery attempts by queue and outcome class (2xx, 3xx, 4xx, 5xx, error, timeout,"
            " auth).",
            ["queue", "status_class"],
            registry=r,
        )
        self.delivery_seconds = LoopHistogram(
            "ingest_proxy_delivery_seconds",
            "Duration of one delivery attempt, by queue.",
            ["queue"],
            buckets=_DELIVERY_BUCKETS,
            registry=r,
        )
        self.task_attempts = LoopHistogram(
            "ingest_proxy_task_attempts",
            "Attempts a task took until it succeeded or was dead-lettered, by queue.",
            ["queue"],
            buckets=_ATTEMPT_BUCKETS,
            registry=r,
        )
        self.commit_batch_size = Histogram(
            "ingest_proxy_commit_batch_size",
            "Tasks stored per SQLite transaction (group commit); duplicates of an"
            " Idempotency-Key store none and are not counted.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "ingest_proxy_queue_depth",
            "Tasks stored and not yet finished (delivered or dead-lettered), by queue: the"
            " due ones (waiting or in flight) and the scheduled ones not yet due"
            " (ingest_proxy_scheduled_tasks) together.",
            ["queue"],
            registry=r,
        )
        self.scheduled_tasks = Gauge(
            "ingest_proxy_scheduled_tasks",
            "Tasks whose schedule time is still ahead (X-Delay, X-Not-Before, or a retry's"
            " backoff), by queue; part of ingest_proxy_queue_depth, and not late.",
            ["queue"],
            registry=r,
        )
        self.oldest_task_age = Gauge(
            "ingest_proxy_oldest_task_age_seconds",
            "How late the most overdue task is, by queue, in seconds: now minus the schedule"
            " time (arrival, X-Delay/X-Not-Before, or a retry's) of the due task not yet"
            " delivered that became due first; 0 when none is due. Tasks scheduled ahead are"
            " not late.",
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
        # logs: the sink is the process's, each registry reads its count when scraped
        r.register(_DroppedLogLines())

    def register(self, collector: Collector) -> None:
        """Add a collector computed at scrape time (for example queue depth from SQLite)."""
        self.registry.register(collector)


class _DroppedLogLines(Collector):
    """``ingest_proxy_log_lines_dropped_total``: lines the process's log sink dropped."""

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "ingest_proxy_log_lines_dropped",
            "Log lines dropped because stderr was not read fast enough (buffer full) or "
            "was closed; requests are never held up by logging.",
        )
        family.add_metric([], float(dropped_total()))
        yield family


# The ingress updates a few metrics for every request. prometheus_client takes a lock per
# sample (three for a histogram observation, about 0.8 us here); these families are
# updated by the event loop's thread only, so a plain list increment does, and the
# registry reads them at scrape time.


class _LoopFamily(Collector):
    """A metric family whose children are updated by one thread (the event loop)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        registry: CollectorRegistry,
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = list(labelnames)
        self._children: dict[tuple[str, ...], list[float]] = {}
        registry.register(self)

    def _child_values(self, values: tuple[str, ...], size: int) -> list[float]:
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {values}")
        return self._children.setdefault(values, [0.0] * size)


class LoopCounter(_LoopFamily):
    """A counter family (``<name>_total``) for the event loop's hot path."""

    def labels(self, *values: str) -> LoopCounterChild:
        """The child counter for ``values`` (one per label, in order)."""
        return LoopCounterChild(self._child_values(values, 1))

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, cell in list(self._children.items()):
            family.add_metric(list(values), cell[0])
        yield family


class LoopCounterChild:
    """One labelled counter of a :class:`LoopCounter`."""

    __slots__ = ("_cell",)

    def __init__(self, cell: list[float]) -> None:
        self._cell = cell

    def inc(self, amount: float = 1.0) -> None:
        """Add ``amount`` (from the event loop's thread only)."""
        self._cell[0] += amount


class LoopHistogram(_LoopFamily):
    """A histogram family for the event loop's hot path (``buckets``: upper bounds)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        super().__init__(name, documentation, labelnames, registry)
        self.bounds = tuple(float(bound) for bound in buckets)
        self._unlabelled = None if self.labelnames else self.labels()

    def labels(self, *values: str) -> LoopHistogramChild:
        """The child histogram for ``values`` (one per label, in order)."""
        # cells: one count per bucket, the +Inf bucket, then the sum
        return LoopHistogramChild(self.bounds, self._child_values(values, len(self.bounds) + 2))

    def observe(self, value: float) -> None:
        """Record ``value`` in the histogram without labels."""
        if self._unlabelled is None:
            raise ValueError(f"{self.name} has labels; observe through labels()")
        self._unlabelled.observe(value)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        edges = [_le_label(bound) for bound in self.bounds] + ["+Inf"]
        for values, cells in list(self._children.items()):
            counts = cells[:-1]
            buckets, total = [], 0.0
            for edge, count in zip(edges, counts, strict=True):
                total += count
                buckets.append((edge, total))
            family.add_metric(list(values), buckets, cells[-1])
        yield family


class LoopHistogramChild:
    """One labelled histogram of a :class:`LoopHistogram`."""

    __slots__ = ("_bounds", "_cells")

    def __init__(self, bounds: tuple[float, ...], cells: list[float]) -> None:
        self._bounds = bounds
        self._cells = cells

    def observe(self, value: float) -> None:
        """Record ``value`` (from the event loop's thread only)."""
        cells = self._cells
        cells[bisect_left(self._bounds, value)] += 1
        cells[-1] += value


def _refusal_codes() -> list[str]:
    """The error codes of the proxy's error classes (the reasons alerts and panels read:
    ``engine_unavailable``, ``backlog_full``, ...); finer codes appear when first sent."""
    codes: set[str] = set()
    pending: list[type[ProxyError]] = [ProxyError]
    while pending:
        cls = pending.pop()
        if cls is not ConfigError:  # a start-up error, never an answer
            codes.add(cls.code)
        pending.extend(cls.__subclasses__())
    return sorted(codes)


# A typed alias of an untyped prometheus_client switch.
_no_created_series: Callable[[], None] = disable_created_metrics
