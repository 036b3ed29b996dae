"""The control headers the proxy reads and never delivers: ``Idempotency-Key`` (a task id
that makes a retried request one task), ``X-Delay`` / ``X-Not-Before`` (when the task is
due), and ``X-Request-Id`` (kept when well-formed)."""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime

from proxy.config.durations import parse_duration
from proxy.errors import BadRequestError
from proxy.limits import MAX_SCHEDULE_AHEAD

CONTROL_HEADERS = frozenset({"idempotency-key", "x-delay", "x-not-before"})
MAX_IDEMPOTENCY_KEY = 255
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_IDEMPOTENCY_RE = re.compile(r"^[\x20-\x7e]+$")


def request_id_from(value: str | None) -> str | None:
    """The client's ``X-Request-Id`` when it is well-formed, else ``None``."""
    if value is not None and _REQUEST_ID_RE.match(value):
        return value
    return None


def task_id_for_key(key: str) -> str:
    """A deterministic task id for an Idempotency-Key (hashed, so prefixes spread well)."""
    if len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequestError(
            f"Idempotency-Key is {len(key)} characters long; the limit is {MAX_IDEMPOTENCY_KEY}.",
            code="invalid_idempotency_key",
        )
    if not _IDEMPOTENCY_RE.match(key):
        raise BadRequestError(
            "Idempotency-Key must be 1 to 255 printable ASCII characters.",
            code="invalid_idempotency_key",
        )
    return hashlib.sha256(key.encode("ascii")).hexdigest()[:40]


def schedule_time_from(delay: str | None, not_before: str | None, now: float) -> float | None:
    """Unix seconds from ``X-Delay`` (``10``, ``30s``, ``5m``, ``2h``) or ``X-Not-Before``
    (Unix seconds or RFC 3339); ``None`` when neither is given. At most 30 days ahead;
    a time in the past means now."""
    if delay is not None and not_before is not None:
        raise BadRequestError(
            "Send X-Delay or X-Not-Before, not both.", code="conflicting_schedule"
        )
    if delay is not None:
        try:
            seconds = parse_duration(delay)
        except ValueError:
            raise BadRequestError(
                f"X-Delay {delay[:40]!r} is not a delay; use seconds or a number with s, m or h.",
                code="invalid_delay",
            ) from None
        if seconds > MAX_SCHEDULE_AHEAD:
            raise BadRequestError("X-Delay may be at most 30 days.", code="invalid_delay")
        return now + seconds
    if not_before is not None:
        when = _parse_time(not_before)
        if when - now > MAX_SCHEDULE_AHEAD:
            raise BadRequestError(
                "X-Not-Before may be at most 30 days ahead.", code="invalid_not_before"
            )
        return max(when, now)
    return None


def _parse_time(value: str) -> float:
    text = value.strip()
    try:
        when = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None or "T" not in text.upper():
            raise BadRequestError(
                f"X-Not-Before {value[:40]!r} is neither Unix seconds nor an RFC 3339 time "
                "with a time zone.",
                code="invalid_not_before",
            ) from None
        return parsed.timestamp()
    if not math.isfinite(when) or when < 0:
        raise BadRequestError("X-Not-Before must be a time after 1970.", code="invalid_not_before")
    return when
