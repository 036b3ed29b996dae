"""The task store's headers column (proxy/engines/local/store/header_codec.py)."""

from __future__ import annotations

import json

import pytest

from proxy.engines.local.store.header_codec import Headers, decode_headers, encode_headers


@pytest.mark.parametrize(
    "headers",
    [
        (),
        (("content-type", "application/json"),),
        (("x-a", "1"), ("x-a", "2"), ("x-empty", ""), ("x-tab", "a\tb")),
    ],
)
def test_ingress_headers_are_lines_and_read_back(headers: Headers) -> None:
    """Headers the ingress lets through are written one name or value per line and read
    back exactly, repeated names and empty values included."""
    text = encode_headers(headers)
    assert not text.startswith("[")
    assert decode_headers(text) == headers


@pytest.mark.parametrize(
    "headers",
    [
        (("x-a", "line\nbreak"),),
        (("x\nname", "v"),),
        (("[x", "v"), ("y", "w")),
    ],
)
def test_headers_that_lines_cannot_hold_fall_back_to_json(headers: Headers) -> None:
    """A line break in a name or value, or a first name starting with "[", is written as
    JSON (Cloud Tasks API tasks may carry such headers) and still reads back exactly."""
    text = encode_headers(headers)
    assert json.loads(text) == [list(pair) for pair in headers]
    assert decode_headers(text) == headers


def test_rows_written_by_earlier_versions_still_read() -> None:
    """Earlier versions wrote a JSON list of pairs; such rows decode to the same headers."""
    old = json.dumps([["content-type", "text/plain"], ["x-request-id", "r1"]])
    assert decode_headers(old) == (("content-type", "text/plain"), ("x-request-id", "r1"))
    assert decode_headers("[]") == ()
