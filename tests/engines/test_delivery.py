"""The backend request built from an Envelope (proxy/engines/delivery.py)."""

from __future__ import annotations

from proxy.engines.delivery import joined_headers


def test_repeated_header_names_are_comma_joined_in_order() -> None:
    """Cloud Tasks takes a map: repeats become one comma-joined value, in arrival order."""
    pairs = (("accept", "a/b"), ("x-one", "1"), ("accept", "c/d"), ("accept", "e/f"))
    assert joined_headers(pairs) == {"accept": "a/b, c/d, e/f", "x-one": "1"}


def test_headers_without_repeats_pass_as_they_are() -> None:
    """Unique names keep their values and order."""
    pairs = (("content-type", "text/plain"), ("x-request-id", "r1"))
    assert list(joined_headers(pairs).items()) == list(pairs)
