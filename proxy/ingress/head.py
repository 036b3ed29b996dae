"""What the ingress reads from a request's head, in one pass over its headers: Host,
Content-Length, the transfer coding, Upgrade, X-Forwarded-*, and the control and
credential headers; with the refusals RFC 9112 asks of a server (a missing, repeated or
malformed Host; a transfer coding other than chunked alone; a bad Content-Length)."""

from __future__ import annotations

import re
from collections.abc import MutableMapping
from typing import Any, NamedTuple

from proxy.errors import BadRequestError, TransferCodingError

Scope = MutableMapping[str, Any]  # an ASGI HTTP scope, as every ingress module takes it

# The request headers the ingress itself reads (uvicorn gives lower-case names).
_HOST, _CONTENT_LENGTH, _UPGRADE, _TRANSFER_ENCODING, _FORWARDED_FOR, _FORWARDED_PROTO = range(6)
_READ: dict[bytes, int | str] = {
    b"host": _HOST,
    b"content-length": _CONTENT_LENGTH,
    b"upgrade": _UPGRADE,
    b"transfer-encoding": _TRANSFER_ENCODING,
    b"x-forwarded-for": _FORWARDED_FOR,
    b"x-forwarded-proto": _FORWARDED_PROTO,
} | {
    name.encode(): name
    for name in (
        "idempotency-key",
        "x-delay",
        "x-not-before",
        "x-request-id",
        "x-api-key",
        "authorization",
    )
}
# host [":" port]: a reg-name (letters, digits, "-._~", sub-delims, %XX) or an IP literal.
_GOOD_HOSTS: dict[bytes, str] = {}  # Host values seen valid (bounded: they are client input)
_GOOD_HOSTS_MAX = 256
_HOST_RE = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~!$&'()*+,;=%-]*)(?::[0-9]{0,5})?")


class Head(NamedTuple):
    """What the ingress reads from the request headers."""

    host: str | None
    control: dict[str, str]  # control and credential headers by (lower-case) name
    content_length: bytes | None
    upgrade: bool
    chunked: bool
    forwarded_for: str | None  # believed only from a trusted proxy
    forwarded_proto: str | None


def read_head(scope: Scope) -> Head:
    """The headers the ingress reads, in one pass over them.

    Raises :class:`BadRequestError` (``invalid_host``) for what RFC 9112 says a server must
    refuse with 400: an HTTP/1.1 request without Host, several Host headers, or a value
    that is not ``host[:port]``; and :class:`TransferCodingError` (501) for a transfer
    coding other than ``chunked`` alone. The host (the ``authority`` of an absolute-form
    target, when the HTTP protocol puts one in the scope) is delivered as
    ``X-Forwarded-Host``.
    """
    control: dict[str, str] = {}
    found: bytes | None = None
    length: bytes | None = None
    upgrade = False
    codings: bytes | None = None  # of Transfer-Encoding, its fields joined with ","
    forwarded_for = forwarded_proto = None
    for name, value in scope["headers"]:
        kind = _READ.get(name)
        if kind is None:
            continue
        if isinstance(kind, str):
            control[kind] = value.decode("latin-1")
        elif kind == _HOST:
            if found is not None:
                raise BadRequestError("Send one Host header, not several.", code="invalid_host")
            found = value
        elif kind == _CONTENT_LENGTH:
            # Several are refused as not a whole number ("5,5"), as RFC 9112 allows.
            length = value if length is None else length + b"," + value
        elif kind == _UPGRADE:
            upgrade = True
        elif kind == _TRANSFER_ENCODING:
            codings = value if codings is None else codings + b"," + value
        elif kind == _FORWARDED_FOR:
            hops = value.decode("latin-1")
            forwarded_for = hops if forwarded_for is None else f"{forwarded_for}, {hops}"
        else:
            forwarded_proto = value.decode("latin-1")
    chunked = False
    if codings is not None:
        _check_codings(codings, scope)
        chunked = True
    host = _host_value(found, scope)
    authority = scope.get("authority")  # of an absolute-form target: stands for Host
    if authority is not None:
        host = _host_value(authority, scope)
    return Head(host, control, length, upgrade, chunked, forwarded_for, forwarded_proto)


def _check_codings(codings: bytes, scope: Scope) -> None:
    """Refuse transfer codings other than ``chunked`` alone: 400 when chunked is not the
    last (the body's length cannot be known, RFC 9112 §6.3), else 501 (RFC 9112 §6.1):
    the parser removes only the chunked coding, so the backend would get a body still
    encoded (gzip, say) under the client's Content-Type. Any coding on HTTP/1.0 is 400."""
    if scope.get("http_version") == "1.0":
        # RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is faulty framing.
        raise BadRequestError(
            "An HTTP/1.0 request cannot use Transfer-Encoding; use HTTP/1.1 or Content-Length.",
            code="transfer_encoding_in_http10",
        )
    if codings.strip().lower() == b"chunked":
        return
    names = [name.strip().lower() for name in codings.split(b",")]
    if names[-1] != b"chunked":
        raise BadRequestError(
            "Transfer-Encoding must end with chunked.", code="invalid_transfer_encoding"
        )
    raise TransferCodingError(
        "Only 'Transfer-Encoding: chunked' is supported; send the body with Content-Length "
        "or chunked alone."
    )


def _host_value(found: bytes | None, scope: Scope) -> str | None:
    """The request's Host (``None`` when an HTTP/1.0 request has none)."""
    if found is None:
        if scope.get("http_version", "1.1") == "1.0":
            return None
        raise BadRequestError("An HTTP/1.1 request needs a Host header.", code="invalid_host")
    host = _GOOD_HOSTS.get(found)
    if host is None:
        if _HOST_RE.fullmatch(found) is None:
            raise BadRequestError("The Host header is not a host[:port].", code="invalid_host")
        host = found.decode("ascii")
        if len(_GOOD_HOSTS) < _GOOD_HOSTS_MAX:
            _GOOD_HOSTS[found] = host
    return host


def parse_content_length(value: bytes) -> int:
    """The value of a Content-Length header; 400 unless it is a whole number."""
    try:
        length = int(value)
    except ValueError:
        length = -1
    if length < 0:
        raise BadRequestError(
            "Content-Length is not a whole number.", code="invalid_content_length"
        )
    return length


def declares_body(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request says a body follows (Content-Length above 0 or chunked)."""
    for name, value in raw_headers:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip(b"0")):
            return True
    return False
