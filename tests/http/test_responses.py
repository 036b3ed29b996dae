"""Error responses (proxy/http/responses.py)."""

from __future__ import annotations

import json

from proxy.errors import BacklogFullError
from proxy.http.responses import closing_response, error_response_parts


def test_closing_response_is_a_whole_json_response() -> None:
    """Status line with its reason, JSON body of the declared length, connection closed."""
    raw = closing_response(431, "headers_too_large", "Too large.")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers == {
        "content-type": "application/json",
        "connection": "close",
        "content-length": str(len(body)),
    }
    assert json.loads(body) == {"error": "headers_too_large", "detail": "Too large."}


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    status, headers, body = error_response_parts(BacklogFullError("full", retry_after=2.2))
    assert status == 429
    assert (b"retry-after", b"3") in headers
    assert json.loads(body)["error"] == "backlog_full"
