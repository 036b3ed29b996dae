"""The one place where an error becomes an HTTP response."""

from __future__ import annotations

import json
import math
from http import HTTPStatus

from proxy.errors import ProxyError

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]  # status, headers, body


def error_body(code: str, detail: str) -> bytes:
    """The JSON error body every refusal carries: ``{"error": code, "detail": sentence}``."""
    return json.dumps({"error": code, "detail": detail}).encode()


def error_response_parts(exc: ProxyError) -> Answer:
    """Status, headers and body for ``exc``; ``Retry-After`` in whole seconds when set."""
    status, headers, body = refusal_parts(exc.status, exc.code, exc.detail)
    if exc.retry_after is not None:
        seconds = max(1, math.ceil(exc.retry_after))
        headers.append((b"retry-after", str(seconds).encode()))
    return status, headers, body


def refusal_parts(status: int, code: str, detail: str) -> Answer:
    """Status, headers and JSON body of a refusal: ``{"error": code, "detail": detail}``
    (the HTTP protocol's own refusals, which are not raised as a :class:`ProxyError`,
    and the body of every one that is)."""
    body = error_body(code, detail)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return status, headers, body


def closing_response(status: int, code: str, detail: str) -> bytes:
    """A whole HTTP/1.1 response that ends the connection, for refusals written by the
    HTTP protocol itself (late or oversized heads, unreadable requests)."""
    body = error_body(code, detail)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )
