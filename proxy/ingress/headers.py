"""Which request headers reach the backend.

Control headers (``Idempotency-Key``, ``X-Delay``, ``X-Not-Before``) steer the proxy and
are never delivered. Hop-by-hop headers, ``Host``, ``Content-Length``, forwarding headers
set by the client, Google-reserved headers and (unless the route allows them)
``Authorization`` and ``Cookie`` are dropped; the proxy then adds its own
``X-Forwarded-For``/``-Proto``/``-Host`` and ``X-Request-Id``.
"""

from __future__ import annotations

import re

from proxy.errors import BadRequestError
from proxy.ingress.control import CONTROL_HEADERS

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

# What may be delivered (RFC 9110 token and field-value, obs-text excluded): anything else
# could not be sent by the HTTP client (non-ASCII) or would split a header (CR, LF, NUL).
_TOKEN_RE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_VALUE_RE = re.compile(rb"[^\t\x20-\x7e]")


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
    kept: list[tuple[str, str]] = []
    listed: list[bytes] | None = None  # values of Connection headers
    for raw_name, raw_value in raw:
        name = _NAMES.get(raw_name)
        if name is None:
            name = _name_of(raw_name)
            if name is not _DROPPED and _TOKEN_RE.fullmatch(raw_name) is None:
                if _dropped_anyway(name, raw, drop):
                    continue
                raise _invalid_header(raw_name)
        if name is _DROPPED:
            # "Connection: keep-alive" or "close" lists no header that would be delivered.
            if raw_value not in _PLAIN_CONNECTION and raw_name.lower() == b"connection":
                listed = [raw_value] if listed is None else [*listed, raw_value]
            continue
        if name == "authorization" and not forward_authorization:
            continue
        if name == "cookie" and not forward_cookies:
            continue
        value = raw_value.decode("latin-1")
        # str.isprintable() is true for ASCII 0x20-0x7e only: the common case in C; the
        # regex runs only for values with a tab or worse.
        if not (value.isascii() and value.isprintable()) and _BAD_VALUE_RE.search(raw_value):
            if _dropped_anyway(name, raw, drop):
                continue
            raise _invalid_header(raw_name)
        kept.append((name, value))
    if listed is not None:
        drop = drop | _connection_options(listed)
    if drop:
        kept = [(name, value) for name, value in kept if _judged(name) not in drop]
    return kept


def _judged(name: str) -> str:
    """``name`` with underscores as hyphens (see :func:`_name_of`)."""
    return name.replace("_", "-") if "_" in name else name


# Header names seen, each mapped to the lower-case name to deliver it under, or to
# _DROPPED: one dict lookup per header on the hot path. Only HTTP tokens are remembered,
# and only so many (names are client input).
# Compared by identity: a client's header name may be any string, this one included.
_DROPPED = "".join(("\x00", "dropped"))
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 1024
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"close", b"Keep-Alive", b"Close"})


def _name_of(raw_name: bytes) -> str:
    """The lower-case name to deliver ``raw_name`` under, or ``_DROPPED``.

    A name is judged as if its underscores were hyphens: CGI, WSGI and PHP backends read
    ``Transfer_Encoding`` as ``Transfer-Encoding`` (both become ``HTTP_TRANSFER_ENCODING``),
    so a header dropped under one spelling is dropped under the other.
    """
    name = raw_name.decode("latin-1").lower()
    judged = _judged(name)
    if judged in ALWAYS_DROPPED or judged.startswith(RESERVED_PREFIXES):
        name = _DROPPED
    if len(_NAMES) < _NAMES_MAX and _TOKEN_RE.fullmatch(raw_name) is not None:
        _NAMES[raw_name] = name
    return name


def _dropped_anyway(name: str, raw: list[tuple[bytes, bytes]], drop: frozenset[str]) -> bool:
    """Whether header ``name`` is removed by ``drop`` or a Connection header of ``raw``
    (then a character it cannot deliver does not matter)."""
    listed = [value for raw_name, value in raw if raw_name.lower() == b"connection"]
    judged = _judged(name)
    return judged in drop or judged in _connection_options(listed)


def _connection_options(values: list[bytes]) -> frozenset[str]:
    """The header names listed in Connection headers: hop-by-hop for this request."""
    return frozenset(
        _judged(token.strip().lower())
        for value in values
        for token in value.decode("latin-1").split(",")
    )


def _invalid_header(raw_name: bytes) -> BadRequestError:
    shown = raw_name.decode("latin-1") if _TOKEN_RE.fullmatch(raw_name) else "a header"
    return BadRequestError(
        f"{shown[:64]} has a character that cannot be delivered: use printable ASCII "
        "(and tabs) in header values and an HTTP token as the name.",
        code="invalid_header",
    )
