"""Queue resources: the Cloud Tasks ``Queue`` message <-> the stored queue config, with the
documented defaults, limits and UpdateQueue field masks.

Defaults when a field is unset (0 in proto3): rate 500/s, concurrency 1000, max_attempts
100, min_backoff 0.1 s, max_backoff 3600 s, max_doublings 16, max_retry_duration 0
(unlimited). ``max_burst_size`` is output-only and derived from the rate (10 at 1/s,
otherwise rate/5, rounded up: 100 at 500/s). Queue-level ``http_target`` is kept as the
serialized message and applied at delivery (``routing.py``); App Engine routing is not
supported by this server (UNIMPLEMENTED).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, replace
from typing import Any

import grpc
from google.cloud.tasks_v2 import (
    HttpTarget,
    Queue,
    RateLimits,
    RetryConfig,
    StackdriverLoggingConfig,
)

from proxy import limits
from proxy.cloudtasks_server import routing
from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.validation import ApiError, invalid
from proxy.config.settings import QueueSettings, RetrySettings
from proxy.limits import default_burst

RUNNING = int(Queue.State.RUNNING)
PAUSED = int(Queue.State.PAUSED)
UNUSED_TARGET = "http://unused.invalid"  # tasks carry their own URL

# Field-mask paths UpdateQueue accepts; output-only ones are accepted and ignored.
_UPDATABLE = {
    "rate_limits",
    "rate_limits.max_dispatches_per_second",
    "rate_limits.max_concurrent_dispatches",
    "retry_config",
    "retry_config.max_attempts",
    "retry_config.min_backoff",
    "retry_config.max_backoff",
    "retry_config.max_doublings",
    "retry_config.max_retry_duration",
    "stackdriver_logging_config",
    "stackdriver_logging_config.sampling_ratio",
}
_OUTPUT_ONLY = {"name", "rate_limits.max_burst_size", "purge_time"}
_UNSUPPORTED = ("app_engine_routing_override",)
_TARGET = "http_target"  # its paths go as deep as the HttpTarget message does


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """One stored queue. Durations in seconds, times in Unix seconds (``purge_time`` 0:
    never purged)."""

    name: str
    rate: float = v.DEFAULT_RATE
    concurrency: int = v.DEFAULT_CONCURRENCY
    max_attempts: int = v.DEFAULT_MAX_ATTEMPTS
    min_backoff: float = v.DEFAULT_MIN_BACKOFF
    max_backoff: float = v.DEFAULT_MAX_BACKOFF
    max_doublings: int = v.DEFAULT_MAX_DOUBLINGS
    max_retry_duration: float = 0.0
    sampling_ratio: float = 0.0
    state: int = RUNNING
    purge_time: float = 0.0
    http_target: bytes = b""  # the serialized queue-level HttpTarget; empty: none

    @property
    def burst(self) -> int:
        """max_burst_size: derived from the rate, as Cloud Tasks does."""
        return default_burst(self.rate)

    @property
    def short_name(self) -> str:
        """The queue id (what X-CloudTasks-QueueName carries)."""
        return self.name.rsplit("/", 1)[-1]

    def settings(self) -> QueueSettings:
        """The embedded dispatcher's settings for this queue (store key: the full name).

        The lease deadline is the longest allowed dispatch deadline; each attempt uses its
        task's own ``dispatch_deadline``.
        """
        return QueueSettings(
            name=self.name,
            target=UNUSED_TARGET,
            rate=self.rate,
            concurrency=self.concurrency,
            dispatch_deadline=limits.MAX_DISPATCH_DEADLINE,
            retry=RetrySettings(
                max_attempts=self.max_attempts,
                min_backoff=self.min_backoff,
                max_backoff=self.max_backoff,
                max_doublings=self.max_doublings,
                max_retry_duration=self.max_retry_duration,
            ),
        )


def _duration(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


def to_message(config: QueueConfig) -> Queue:
    """The Queue resource a client sees."""
    queue = Queue(
        name=config.name,
        rate_limits=RateLimits(
            max_dispatches_per_second=config.rate,
            max_burst_size=config.burst,
            max_concurrent_dispatches=config.concurrency,
        ),
        retry_config=RetryConfig(
            max_attempts=config.max_attempts,
            min_backoff=_duration(config.min_backoff),
            max_backoff=_duration(config.max_backoff),
            max_doublings=config.max_doublings,
            max_retry_duration=_duration(config.max_retry_duration),
        ),
        stackdriver_logging_config=StackdriverLoggingConfig(sampling_ratio=config.sampling_ratio),
        state=Queue.State(config.state),
    )
    if config.purge_time:
        Queue.pb(queue).purge_time.FromNanoseconds(round(config.purge_time * 1e6) * 1000)
    if config.http_target:
        queue.http_target = HttpTarget.deserialize(config.http_target)
    return queue


def _check_unsupported(queue: Queue) -> None:
    for field in _UNSUPPORTED:
        if field in queue:
            raise ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"Queue.{field} is not supported by this local server (HTTP tasks only).",
            )


def _merge(config: QueueConfig, queue: Queue, paths: set[str] | None) -> QueueConfig:
    """``config`` with the fields of ``queue`` named by ``paths`` (``None``: every field
    present in ``queue``); unset values take the documented defaults."""

    def wanted(path: str) -> bool:
        if paths is None:
            return path.split(".")[0] in queue
        return path in paths or path.split(".")[0] in paths

    rate, retry = queue.rate_limits, queue.retry_config
    changes: dict[str, object] = {}
    if wanted("rate_limits.max_dispatches_per_second"):
        changes["rate"] = float(rate.max_dispatches_per_second) or v.DEFAULT_RATE
    if wanted("rate_limits.max_concurrent_dispatches"):
        changes["concurrency"] = int(rate.max_concurrent_dispatches) or v.DEFAULT_CONCURRENCY
    if wanted("retry_config.max_attempts"):
        changes["max_attempts"] = int(retry.max_attempts) or v.DEFAULT_MAX_ATTEMPTS
    if wanted("retry_config.min_backoff"):
        changes["min_backoff"] = v.seconds(retry.min_backoff) or v.DEFAULT_MIN_BACKOFF
    if wanted("retry_config.max_backoff"):
        changes["max_backoff"] = v.seconds(retry.max_backoff) or v.DEFAULT_MAX_BACKOFF
    if wanted("retry_config.max_doublings"):
        changes["max_doublings"] = int(retry.max_doublings) or v.DEFAULT_MAX_DOUBLINGS
    if wanted("retry_config.max_retry_duration"):
        # Truncated to whole seconds, as documented.
        changes["max_retry_duration"] = float(int(v.seconds(retry.max_retry_duration) or 0))
    if wanted("stackdriver_logging_config.sampling_ratio"):
        changes["sampling_ratio"] = float(queue.stackdriver_logging_config.sampling_ratio)
    target_paths = [_TARGET] if paths is None else [p for p in paths if p.split(".")[0] == _TARGET]
    if target_paths and (paths is not None or _TARGET in queue):
        changes["http_target"] = _merged_target(config.http_target, queue, target_paths)
    merged = replace(config, **changes)  # type: ignore[arg-type]
    check(merged)
    return merged


def _merged_target(stored: bytes, queue: Queue, paths: list[str]) -> bytes:
    """The stored target with the fields of ``queue.http_target`` that ``paths`` name
    (``http_target`` itself: the whole message; a field absent from ``queue`` is cleared),
    checked; empty bytes when nothing is left."""
    given = HttpTarget.pb(queue.http_target)
    target = HttpTarget.pb(HttpTarget.deserialize(stored))
    for path in paths:
        parts = path.split(".")[1:]
        if not parts:
            target.CopyFrom(given)
            continue
        _copy_field(given, target, parts, path)
    routing.check(HttpTarget.wrap(target))
    return bytes(target.SerializeToString())


def _copy_field(source: Any, destination: Any, parts: list[str], path: str) -> None:
    """Copy the field ``parts`` names from ``source`` to ``destination`` (clear it when
    ``source`` has none); INVALID_ARGUMENT for a path HttpTarget does not have."""
    *outer, leaf = parts
    for name in outer:
        field = source.DESCRIPTOR.fields_by_name.get(name)
        if field is None or field.message_type is None or field.is_repeated:
            raise invalid(f"Unknown field mask path: {path}.")
        source, destination = getattr(source, name), getattr(destination, name)
    field = source.DESCRIPTOR.fields_by_name.get(leaf)
    if field is None:
        raise invalid(f"Unknown field mask path: {path}.")
    if field.is_repeated:
        destination.ClearField(leaf)
        getattr(destination, leaf).extend(getattr(source, leaf))
    elif not field.has_presence:
        setattr(destination, leaf, getattr(source, leaf))
    elif not source.HasField(leaf):
        destination.ClearField(leaf)
    elif field.message_type is not None:
        getattr(destination, leaf).CopyFrom(getattr(source, leaf))
    else:
        setattr(destination, leaf, getattr(source, leaf))


def check(config: QueueConfig) -> None:
    """INVALID_ARGUMENT unless the limits hold."""
    if not 0 < config.rate <= limits.MAX_RATE:
        raise invalid("rate_limits.max_dispatches_per_second must be in (0, 500].")
    if not 1 <= config.concurrency <= limits.MAX_CONCURRENCY:
        raise invalid("rate_limits.max_concurrent_dispatches must be in [1, 5000].")
    if config.max_attempts < -1:
        raise invalid("retry_config.max_attempts must be -1 (unlimited) or positive.")
    if config.min_backoff < 0 or config.max_backoff < 0 or config.max_retry_duration < 0:
        raise invalid("retry_config durations must not be negative.")
    if config.max_backoff < config.min_backoff:
        raise invalid("retry_config.max_backoff must not be less than min_backoff.")
    if not 0 <= config.max_doublings <= 64:
        raise invalid("retry_config.max_doublings must be in [0, 64].")
    if not 0 <= config.sampling_ratio <= 1:
        raise invalid("stackdriver_logging_config.sampling_ratio must be in [0, 1].")


def for_create(parent: str, queue: Queue) -> QueueConfig:
    """The config CreateQueue stores: the queue must sit under ``parent``."""
    name = v.parse_queue_name(queue.name)
    if name.parent != parent:
        raise invalid(f"The queue name {queue.name!r} is not under the parent {parent!r}.")
    _check_unsupported(queue)
    return _merge(QueueConfig(name=name.path), queue, None)


def for_update(current: QueueConfig | None, queue: Queue, mask: list[str]) -> QueueConfig:
    """The config UpdateQueue stores: ``mask`` names the fields to change (empty: all
    fields given); ``current`` ``None`` creates the queue with defaults elsewhere."""
    name = v.parse_queue_name(queue.name)
    paths = set(mask) or None
    if paths is not None:
        unknown = sorted(
            p
            for p in paths
            if p not in _UPDATABLE and p not in _OUTPUT_ONLY and p.split(".")[0] != _TARGET
        )
        if any(p.split(".")[0] in _UNSUPPORTED for p in unknown):
            _check_unsupported(queue)
        if "state" in unknown:
            raise invalid("Queue.state cannot be changed by UpdateQueue; use Pause/ResumeQueue.")
        if unknown:
            raise invalid(f"Unknown field mask path(s): {', '.join(unknown)}.")
        paths -= _OUTPUT_ONLY
    else:
        _check_unsupported(queue)
    return _merge(current or QueueConfig(name=name.path), queue, paths)
