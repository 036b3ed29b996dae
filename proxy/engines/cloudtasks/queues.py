"""``ingest-proxy queues apply``: make Cloud Tasks queues match the config file.

For each configured queue: create it when missing, otherwise update the rate limits and
retry config that differ (UpdateQueue with a field mask naming exactly those fields).
The burst size is output-only in Cloud Tasks v2, so it is neither compared nor sent.
A queue in relay mode also gets its companion ``<queue>-dead-letters``, created and kept
paused (Cloud Tasks never dispatches a dead letter; replays go to the queue itself).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from google.api_core import exceptions as core_exceptions
from google.api_core import retry_async
from google.cloud.tasks_v2 import (
    CloudTasksAsyncClient,
    CreateQueueRequest,
    GetQueueRequest,
    PauseQueueRequest,
    Queue,
    RateLimits,
    RetryConfig,
    UpdateQueueRequest,
)

from proxy.config.settings import DEAD_LETTER_SUFFIX, QueueSettings, Settings
from proxy.engines.cloudtasks.channel import make_client
from proxy.engines.cloudtasks.errors import admin_error

# Transient errors are retried for a few seconds: a CLI should answer soon.
_RETRY = retry_async.AsyncRetry(
    initial=0.2,
    maximum=2.0,
    multiplier=2.0,
    timeout=8.0,
    predicate=retry_async.if_transient_error,
)

# Field-mask path -> how to read the value from a Queue, for comparison and printing.
_FIELDS: tuple[tuple[str, str], ...] = (
    ("rate_limits.max_dispatches_per_second", "rate"),
    ("rate_limits.max_concurrent_dispatches", "concurrency"),
    ("retry_config.max_attempts", "max_attempts"),
    ("retry_config.min_backoff", "min_backoff"),
    ("retry_config.max_backoff", "max_backoff"),
    ("retry_config.max_doublings", "max_doublings"),
    ("retry_config.max_retry_duration", "max_retry_duration"),
)


@dataclass(frozen=True, slots=True)
class QueueChange:
    """What ``apply`` does to one queue: ``create``, ``update`` or ``none``, and the
    fields that differ as ``(name, current, desired)``."""

    queue: str
    action: str
    fields: tuple[tuple[str, object, object], ...] = ()

    def describe(self) -> str:
        """One line per change, like a diff."""
        if self.action == "create":
            values = ", ".join(f"{name}={desired}" for name, _, desired in self.fields)
            return f"+ create queue {self.queue}: {values}"
        if self.action == "update":
            parts = "; ".join(f"{n} {c} -> {d}" for n, c, d in self.fields)
            return f"~ update queue {self.queue}: {parts}"
        return f"= queue {self.queue}: no changes"


def desired_queue(path: str, queue: QueueSettings) -> Queue:
    """The Cloud Tasks Queue resource the config describes."""
    retry = queue.retry
    return Queue(
        name=path,
        rate_limits=RateLimits(
            max_dispatches_per_second=queue.rate, max_concurrent_dispatches=queue.concurrency
        ),
        retry_config=RetryConfig(
            max_attempts=retry.max_attempts,
            min_backoff=datetime.timedelta(seconds=retry.min_backoff),
            max_backoff=datetime.timedelta(seconds=retry.max_backoff),
            max_doublings=retry.max_doublings,
            max_retry_duration=datetime.timedelta(seconds=retry.max_retry_duration),
        ),
    )


def _values(queue: Queue) -> dict[str, object]:
    rate, retry = queue.rate_limits, queue.retry_config

    def seconds(value: datetime.timedelta | None) -> float:
        return round(value.total_seconds(), 6) if value is not None else 0.0

    return {
        "rate": float(rate.max_dispatches_per_second),
        "concurrency": int(rate.max_concurrent_dispatches),
        "max_attempts": int(retry.max_attempts),
        "min_backoff": seconds(retry.min_backoff),
        "max_backoff": seconds(retry.max_backoff),
        "max_doublings": int(retry.max_doublings),
        "max_retry_duration": seconds(retry.max_retry_duration),
    }


def diff(current: Queue | None, desired: Queue, name: str) -> QueueChange:
    """The change that turns ``current`` (``None``: missing) into ``desired``."""
    want = _values(desired)
    if current is None:
        return QueueChange(name, "create", tuple((k, None, v) for k, v in want.items()))
    have = _values(current)
    changed = tuple((k, have[k], want[k]) for _, k in _FIELDS if have[k] != want[k])
    return QueueChange(name, "update" if changed else "none", changed)


async def apply_queues(
    settings: Settings, *, dry_run: bool, client: CloudTasksAsyncClient | None = None
) -> list[QueueChange]:
    """Create or update every configured queue; with ``dry_run`` change nothing."""
    ct = settings.cloudtasks
    parent = f"projects/{ct.project}/locations/{ct.location}"
    own = client is None
    client = client or make_client(ct)
    changes = []
    what = "Queues"
    try:
        for queue in settings.queues:
            what = f"Queue {queue.name}"
            path = f"{parent}/queues/{queue.name}"
            desired = desired_queue(path, queue)
            try:
                current: Queue | None = await client.get_queue(
                    request=GetQueueRequest(name=path), retry=_RETRY, timeout=30
                )
            except core_exceptions.NotFound:
                current = None
            change = diff(current, desired, queue.name)
            changes.append(change)
            if dry_run or change.action == "none":
                continue
            if change.action == "create":
                await client.create_queue(
                    request=CreateQueueRequest(parent=parent, queue=desired), timeout=30
                )
            else:
                paths = [p for p, key in _FIELDS if key in {f[0] for f in change.fields}]
                await client.update_queue(
                    request=UpdateQueueRequest(queue=desired, update_mask={"paths": paths}),
                    timeout=30,
                )
        for queue in settings.queues:
            if ct.relays(queue):
                what = f"Queue {queue.name}{DEAD_LETTER_SUFFIX}"
                path = f"{parent}/queues/{queue.name}{DEAD_LETTER_SUFFIX}"
                changes.append(await _dead_letter_queue(client, parent, path, dry_run=dry_run))
    except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
        raise admin_error(what, exc) from exc
    finally:
        if own:
            await client.transport.close()  # type: ignore[no-untyped-call]
    return changes


async def _dead_letter_queue(
    client: CloudTasksAsyncClient, parent: str, path: str, *, dry_run: bool
) -> QueueChange:
    """Create the paused dead-letter queue ``path`` when missing; pause it when it runs."""
    name = path.rsplit("/", 1)[-1]
    try:
        current: Queue | None = await client.get_queue(
            request=GetQueueRequest(name=path), retry=_RETRY, timeout=30
        )
    except core_exceptions.NotFound:
        current = None
    if current is not None and current.state == Queue.State.PAUSED:
        return QueueChange(name, "none")
    if current is None:
        change = QueueChange(name, "create", (("state", None, "paused"),))
    else:
        change = QueueChange(name, "update", (("state", current.state.name.lower(), "paused"),))
    if dry_run:
        return change
    if current is None:
        await client.create_queue(
            request=CreateQueueRequest(parent=parent, queue=Queue(name=path)), timeout=30
        )
    await client.pause_queue(request=PauseQueueRequest(name=path), timeout=30)
    return change
