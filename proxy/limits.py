"""Cloud Tasks' own limits and derivations, shared by the proxy's config (its queues must
fit a Cloud Tasks queue), the delivery path and the local Cloud Tasks server (which
refuses what Google refuses). Values from the Cloud Tasks v2 reference and quotas page."""

from __future__ import annotations

import math
import re

PROJECT_ID_RE = re.compile(r"^[A-Za-z0-9.:-]{1,100}$")
LOCATION_RE = re.compile(r"^[A-Za-z0-9-]{1,63}$")
QUEUE_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")
TASK_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,500}$")

MAX_RATE = 500.0  # dispatches per second per queue
MAX_CONCURRENCY = 5000  # concurrent dispatches per queue
MIN_DISPATCH_DEADLINE = 15.0  # seconds
MAX_DISPATCH_DEADLINE = 1800.0  # seconds
MAX_SCHEDULE_AHEAD = 30 * 86400.0  # seconds a task may be scheduled into the future
MAX_TASK_BYTES = 100 * 1024  # a task's size, as CreateTask counts it
MAX_URL_LENGTH = 2083  # characters of an HTTP target's URL
MAX_HEADER_BYTES = 80 * 1000  # a task's headers, names and values


def default_burst(rate: float) -> int:
    """Token-bucket size Cloud Tasks derives from the rate: 10 at 1/s, otherwise rate/5."""
    if rate == 1:
        return 10
    return max(1, math.ceil(rate / 5))
