"""Which request headers reach the backend, and the control headers the proxy reads.

Control headers (``Idempotency-Key``, ``X-Delay``, ``X-Not-Before``) steer the proxy and
are never delivered. Hop-by-hop headers, ``Host``, ``Content-Length``, forwarding headers
set by the client, Google-reserved headers and (unless the route allows them)
``Authorization`` and ``Cookie`` are dropped; the proxy then adds its own
``X-Forwarded-For``/``-Proto``/``-Host`` and ``X-Request-Id``.
"""

from __future__ import annotations

import hashlib
import math
import re
from datetime import datetime

from proxy.config import MAX_SCHEDULE_AHEAD, parse_duration
from proxy.errors import BadRequestError

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
CONTROL_HEADERS = frozenset({"idempotency-key", "x-delay", "x-not-before"})
ALWAYS_DROPPED = (
    HOP_BY_HOP
    | CONTROL_HEADERS
    | {
        "host",
        "content-length",
        "expect",
        "user-agent",  # Cloud Tasks replaces it with "Google-Cloud-Tasks"
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-real-ip",
        "x-request-id",
    }
)
RESERVED_PREFIXES = ("x-cloudtasks-", "x-google-", "x-appengine-")
MAX_IDEMPOTENCY_KEY = 255

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
_IDEMPOTENCY_RE = re.compile(r"^[\x20-\x7e]+$")
# What may be delivered (RFC 9110 token and field-value, obs-text excluded): anything else
# could not be sent by the HTTP client (non-ASCII) or would split a header (CR, LF, NUL).
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_RE = re.compile(rb"[^\t\x20-\x7e]")
_GOOD_NAMES: set[bytes] = set()  # names seen to be tokens (bounded: names are client input)
_GOOD_NAMES_MAX = 1024


def filter_headers(
    raw: list[tuple[bytes, bytes]],
    *,
    forward_authorization: bool = False,
    forward_cookies: bool = False,
    drop: frozenset[str] = frozenset(),
) -> list[tuple[str, str]]:
    """The client's headers that may be delivered, as lower-case ``(name, value)`` pairs.

    ``drop`` names more headers to remove (e.g. the one that carried the proxy's API key).
    Raises :class:`BadRequestError` (``invalid_header``) when a header to deliver has a
    name that is not an HTTP token or a value with a control character (HTAB aside) or a
    byte outside ASCII: such a task could never be delivered.
    """
    dropped: set[str] = set(drop)
    for raw_name, raw_value in raw:
        if raw_name.lower() == b"connection":
            dropped.update(t.strip().lower() for t in raw_value.decode("latin-1").split(","))
    kept: list[tuple[str, str]] = []
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        if name in ALWAYS_DROPPED or name in dropped or name.startswith(RESERVED_PREFIXES):
            continue
        if name == "authorization" and not forward_authorization:
            continue
        if name == "cookie" and not forward_cookies:
            continue
        value = raw_value.decode("latin-1")
        # str.isprintable() is true for ASCII 0x20-0x7e only: the common case in C; the
        # regex runs only for values with a tab or worse.
        if not (value.isascii() and value.isprintable()) and _BAD_VALUE_RE.search(raw_value):
            raise _invalid_header(raw_name)
        if raw_name not in _GOOD_NAMES:
            if _TOKEN_RE.fullmatch(raw_name) is None:
                raise _invalid_header(raw_name)
            if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
                _GOOD_NAMES.add(raw_name)
        kept.append((name, value))
    return kept


def _invalid_header(raw_name: bytes) -> BadRequestError:
    shown = raw_name.decode("latin-1") if _TOKEN_RE.fullmatch(raw_name) else "a header"
    return BadRequestError(
        f"{shown[:64]} has a character that cannot be delivered: use printable ASCII "
        "(and tabs) in header values and an HTTP token as the name.",
        code="invalid_header",
    )


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
