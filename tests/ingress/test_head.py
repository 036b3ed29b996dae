"""What the ingress reads from a request's head (proxy/ingress/head.py)."""

from __future__ import annotations

import pytest

from proxy.errors import BadRequestError, TransferCodingError
from proxy.ingress.head import declares_body, parse_content_length, read_head


def _scope(*headers: tuple[bytes, bytes], version: str = "1.1") -> dict[str, object]:
    return {"headers": list(headers), "http_version": version}


def test_control_and_forwarding_headers_are_read_in_one_pass() -> None:
    """Host, Content-Length, X-Forwarded-* (several joined) and control headers."""
    head = read_head(
        _scope(
            (b"host", b"example.com:8080"),
            (b"content-length", b"5"),
            (b"x-forwarded-for", b"1.2.3.4"),
            (b"x-forwarded-for", b"5.6.7.8"),
            (b"idempotency-key", b"k1"),
            (b"x-other", b"ignored"),
        )
    )
    assert head.host == "example.com:8080"
    assert head.content_length == b"5"
    assert head.forwarded_for == "1.2.3.4, 5.6.7.8"
    assert head.control == {"idempotency-key": "k1"}
    assert not head.chunked
    assert not head.upgrade


@pytest.mark.parametrize(
    "headers",
    [
        (),  # HTTP/1.1 without Host
        ((b"host", b"a"), (b"host", b"b")),  # two Hosts
        ((b"host", b"a b"),),  # not host[:port]
    ],
)
def test_host_problems_are_400(headers: tuple[tuple[bytes, bytes], ...]) -> None:
    """RFC 9112 §3.2: a server must refuse these with 400."""
    with pytest.raises(BadRequestError) as caught:
        read_head(_scope(*headers))
    assert caught.value.code == "invalid_host"


def test_an_http_10_request_may_have_no_host() -> None:
    """HTTP/1.0 had no Host requirement."""
    assert read_head(_scope(version="1.0")).host is None


def test_only_chunked_alone_is_a_transfer_coding_taken() -> None:
    """chunked is read; gzip, chunked is 501; chunked not last is 400."""
    assert read_head(_scope((b"host", b"a"), (b"transfer-encoding", b"chunked"))).chunked
    with pytest.raises(TransferCodingError):
        read_head(_scope((b"host", b"a"), (b"transfer-encoding", b"gzip, chunked")))
    with pytest.raises(BadRequestError):
        read_head(_scope((b"host", b"a"), (b"transfer-encoding", b"chunked, gzip")))


def test_content_length_must_be_one_whole_number() -> None:
    """Several values ("5,5") and negatives are refused."""
    assert parse_content_length(b"12") == 12
    for value in (b"5,5", b"-1", b"x"):
        with pytest.raises(BadRequestError):
            parse_content_length(value)


def test_a_body_is_declared_by_a_length_above_zero_or_a_transfer_coding() -> None:
    """Content-Length: 0 declares none."""
    assert declares_body([(b"content-length", b"3")])
    assert declares_body([(b"transfer-encoding", b"chunked")])
    assert not declares_body([(b"content-length", b"0"), (b"host", b"a")])
