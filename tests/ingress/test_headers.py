"""Header filtering and control-header parsing (proxy/ingress/headers.py)."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequestError
from proxy.ingress.headers import (
    filter_headers,
    request_id_from,
    schedule_time_from,
    task_id_for_key,
)

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
    ("value", "expected"),
    [("abc-123", "abc-123"), ("x" * 128, "x" * 128), ("x" * 129, None), ("a b", None), ("", None)],
)
def test_request_id_kept_only_when_well_formed(value: str, expected: str | None) -> None:
    """A client X-Request-Id is reused only when it is short and made of safe characters."""
    assert request_id_from(value) == expected


def test_idempotency_key_gives_a_stable_hashed_task_id() -> None:
    """The same key always maps to the same valid task id; different keys differ."""
    first = task_id_for_key("order-42")
    assert first == task_id_for_key("order-42")
    assert first != task_id_for_key("order-43")
    assert len(first) == 40
    assert all(c in "0123456789abcdef" for c in first)


@pytest.mark.parametrize("key", ["k" * 256, "caf\u00e9", "tab\there", ""])
def test_bad_idempotency_keys_are_refused(key: str) -> None:
    """Keys longer than 255 characters or with non-printable/non-ASCII characters: 400."""
    with pytest.raises(BadRequestError) as info:
        task_id_for_key(key)
    assert info.value.code == "invalid_idempotency_key"


@pytest.mark.parametrize(
    ("delay", "seconds"), [("10", 10), ("1.5", 1.5), ("30s", 30), ("5m", 300), ("2h", 7200)]
)
def test_x_delay_forms(delay: str, seconds: float) -> None:
    """X-Delay accepts seconds or a number with s, m or h."""
    assert schedule_time_from(delay, None, NOW) == NOW + seconds


@pytest.mark.parametrize("delay", ["soon", "-5", "5x", "31d", "1e9"])
def test_bad_x_delay_is_refused(delay: str) -> None:
    """Unparseable, negative or more-than-30-days delays are a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from(delay, None, NOW)
    assert info.value.code == "invalid_delay"


def test_x_not_before_unix_and_rfc3339() -> None:
    """X-Not-Before takes Unix seconds or RFC 3339 with a zone; the past means now."""
    assert schedule_time_from(None, str(NOW + 60), NOW) == NOW + 60
    assert schedule_time_from(None, "2023-11-14T22:14:20Z", NOW) == NOW + 60
    assert schedule_time_from(None, "2023-11-14T23:14:20+01:00", NOW) == NOW + 60
    assert schedule_time_from(None, "1000", NOW) == NOW


@pytest.mark.parametrize(
    "value", ["tomorrow", "2023-11-14T22:14:20", "2023-11-14", str(NOW + 31 * 86400), "nan"]
)
def test_bad_x_not_before_is_refused(value: str) -> None:
    """Naive times, dates without a time, junk and times > 30 days ahead are a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from(None, value, NOW)
    assert info.value.code == "invalid_not_before"


def test_both_schedule_headers_conflict() -> None:
    """Sending X-Delay and X-Not-Before together is a 400."""
    with pytest.raises(BadRequestError) as info:
        schedule_time_from("5", str(NOW), NOW)
    assert info.value.code == "conflicting_schedule"


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
