"""Which headers are delivered (proxy/ingress/headers.py)."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequestError
from proxy.ingress.headers import filter_headers

NOW = 1_700_000_000.0


def _raw(*pairs: tuple[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode(), v.encode()) for k, v in pairs]


def test_hop_by_hop_and_reserved_headers_are_dropped() -> None:
    """Hop-by-hop, Host, Content-Length, control and Google-reserved headers never pass."""
    kept = filter_headers(
        _raw(
            ("host", "example"),
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("content-length", "3"),
            ("x-secret-hop", "1"),
            ("idempotency-key", "k"),
            ("x-delay", "5s"),
            ("x-cloudtasks-taskname", "forged"),
            ("x-google-foo", "1"),
            ("x-appengine-bar", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("content-type", "application/json"),
            ("x-custom", "v"),
        )
    )
    assert kept == [("content-type", "application/json"), ("x-custom", "v")]


def test_credentials_pass_only_when_the_route_allows() -> None:
    """Authorization and Cookie are stripped unless forwarding them is configured."""
    raw = _raw(("authorization", "Bearer t"), ("cookie", "a=b"))
    assert filter_headers(raw) == []
    assert filter_headers(raw, forward_authorization=True) == [("authorization", "Bearer t")]
    assert filter_headers(raw, forward_cookies=True) == [("cookie", "a=b")]


def test_repeated_headers_keep_their_order() -> None:
    """Repeated header names are all kept, in order, with lower-case names."""
    kept = filter_headers(_raw(("X-A", "1"), ("x-a", "2")))
    assert kept == [("x-a", "1"), ("x-a", "2")]


@pytest.mark.parametrize(
    "name",
    [
        b"Transfer_Encoding",
        b"content_length",
        b"X_Forwarded_For",
        b"X-Forwarded_Host",
        b"x_cloudtasks_taskname",
        b"Proxy_Authorization",
        b"Idempotency_Key",
    ],
)
def test_underscore_spellings_of_dropped_headers_are_dropped(name: bytes) -> None:
    """A name whose underscores read as hyphens name a dropped header is dropped too: CGI
    and WSGI backends see both spellings as the same variable (HTTP_TRANSFER_ENCODING)."""
    assert filter_headers([(name, b"v"), (b"x-kept", b"1")]) == [("x-kept", "1")]


def test_underscore_names_of_other_headers_are_delivered() -> None:
    """Underscores in a name that is dropped under no spelling are delivered as sent."""
    assert filter_headers([(b"X_Custom_Thing", b"v")]) == [("x_custom_thing", "v")]


def test_underscore_spelling_of_a_credential_or_connection_option_is_dropped() -> None:
    """The credential header the proxy read (``drop``) and headers named by Connection are
    dropped under their underscore spellings too."""
    raw = [(b"X_Api_Key", b"k"), (b"Connection", b"x-hop"), (b"X_Hop", b"1"), (b"X-A", b"a")]
    assert filter_headers(raw, drop=frozenset({"x-api-key"})) == [("x-a", "a")]


@pytest.mark.parametrize("name", [b"\x00", b"\x00dropped"])
def test_a_name_like_the_internal_drop_marker_is_refused(name: bytes) -> None:
    """A header name that is no HTTP token is refused, even one spelled like the marker
    filter_headers uses for dropped names (found by tests/security/test_mapping.py)."""
    with pytest.raises(BadRequestError) as caught:
        filter_headers([(name, b"")])
    assert caught.value.code == "invalid_header"
