"""What every delivery attempt leaves behind, for every engine that sees its attempts (the
embedded dispatcher, the Cloud Tasks relay): ``ingest_proxy_dispatches_total``,
``ingest_proxy_delivery_seconds``, ``ingest_proxy_task_attempts`` and one log line, so the
dashboard and the logs read the same on both engines."""

from __future__ import annotations

import logging

from proxy.engines.local.attempt import Outcome
from proxy.logs import FixedLine, emit
from proxy.metrics import Metrics

delivery_log = logging.getLogger("ingest_proxy.delivery")
# The line of an attempt that got an answer and needs no extra field: the usual one.
_ANSWERED_LINE = FixedLine(
    delivery_log,
    logging.INFO,
    "delivery",
    ("queue", "task", "request_id", "attempt", "status", "outcome", "latency_ms", "result"),
)
OUTCOME_KINDS = ("2xx", "3xx", "4xx", "5xx", "error", "timeout", "auth")


class AttemptRecorder:
    """The metrics and the log line of the attempts of one queue."""

    def __init__(self, metrics: Metrics, queue: str) -> None:
        self.queue = queue
        self.dispatches = {kind: metrics.dispatches.labels(queue, kind) for kind in OUTCOME_KINDS}
        self.delivery_seconds = metrics.delivery_seconds.labels(queue)
        self.task_attempts = metrics.task_attempts.labels(queue)

    def log(
        self,
        task: str,
        request_id: str | None,
        outcome: Outcome,
        attempts: int,
        latency: float,
        result: str,
        *,
        level: int = logging.INFO,
        **extra: object,
    ) -> None:
        """One line for the ``attempts``-th attempt of ``task`` that ended as ``outcome``
        after ``latency`` seconds (never the body or the query string)."""
        if not delivery_log.isEnabledFor(level):
            return
        if level == logging.INFO and not extra and outcome.status is not None:
            _ANSWERED_LINE.emit(
                self.queue,
                task,
                request_id,
                attempts,
                outcome.status,
                outcome.kind,
                round(latency * 1000, 3),
                result,
            )
            return
        fields: dict[str, object] = {
            "queue": self.queue,
            "task": task,
            "request_id": request_id,
            "attempt": attempts,
            "status": outcome.status,
            "outcome": outcome.kind,
            "latency_ms": round(latency * 1000, 3),
            "result": result,
            **extra,
        }
        if outcome.status is None:
            fields["error"] = outcome.error
        emit(delivery_log, level, "delivery", fields)  # never blocks (proxy/logsink.py)
