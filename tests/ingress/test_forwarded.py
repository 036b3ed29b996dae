"""Trusted proxies and the client they name (proxy/ingress/forwarded.py), and the ingress using
them through a real server."""

from __future__ import annotations

import socket

import pytest

from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from proxy.ingress.forwarded import TrustedProxies, forwarded_scheme
from proxy.server import ingress_options
from tests.support.engines import RecordingEngine
from tests.support.servers import serve_in_thread


@pytest.mark.parametrize(
    ("spec", "peer", "trusted"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("127.0.0.1", "127.0.0.2", False),
        ("10.0.0.0/8, 192.168.1.1", "10.20.30.40", True),
        ("10.0.0.0/8, 192.168.1.1", "192.168.1.1", True),
        ("10.0.0.0/8, 192.168.1.1", "11.0.0.1", False),
        ("::1", "0:0:0:0:0:0:0:1", True),
        ("fd00::/8", "fd12::5", True),
        ("*", "203.0.113.9", True),
        ("", "127.0.0.1", False),
        ("127.0.0.1", "not-an-address", False),
    ],
)
def test_trusted_peers(spec: str, peer: str, trusted: bool) -> None:
    """Addresses compare as addresses (any IPv6 spelling), networks by membership; "*"
    trusts every peer and an empty list none; a peer that is no address is never trusted."""
    assert (peer in TrustedProxies(spec)) is trusted


def test_an_entry_that_is_no_address_is_an_error() -> None:
    """The config refuses such entries (tests/config/test_loading.py); the class does too."""
    with pytest.raises(ValueError, match=r"'lb\.internal' is not an IP address or network"):
        TrustedProxies("10.0.0.1, lb.internal")


@pytest.mark.parametrize(
    ("spec", "header", "client"),
    [
        ("10.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("10.0.0.1", "198.51.100.7, 10.0.0.1", "198.51.100.7"),
        ("10.0.0.0/8", "6.6.6.6, 198.51.100.7, 10.0.0.2", "198.51.100.7"),
        ("10.0.0.0/8", "10.0.0.3, 10.0.0.2", "10.0.0.3"),
        ("*", "198.51.100.7, 10.0.0.2", "198.51.100.7"),
        ("10.0.0.1", "198.51.100.7:4711", "198.51.100.7"),
        ("10.0.0.1", "[2001:db8::1]:4711", "2001:db8::1"),
        ("10.0.0.1", "2001:db8::1", "2001:db8::1"),
        ("10.0.0.1", " , ", None),
    ],
)
def test_client_is_the_nearest_untrusted_hop(spec: str, header: str, client: str | None) -> None:
    """Hops a client wrote itself (left of the first untrusted one) are never believed."""
    assert TrustedProxies(spec).client(header) == client


@pytest.mark.parametrize(
    ("value", "scheme"),
    [("https", "https"), ("HTTP", "http"), ("https, http", "https"), ("ftp", None)],
)
def test_forwarded_scheme(value: str, scheme: str | None) -> None:
    """Only http and https are taken from X-Forwarded-Proto."""
    assert forwarded_scheme(value) == scheme


def _delivered_forwarding(trusted: str, extra: bytes) -> tuple[str, ...]:
    engine = RecordingEngine()
    settings = settings_from_dict(
        {
            "queues": [{"name": "q", "target": "http://127.0.0.1:9"}],
            "server": {"trusted_proxies": trusted},
        }
    )
    options = ingress_options(settings) | {"log_level": "warning"}
    with serve_in_thread(create_app(settings, engine=engine), **options) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /f HTTP/1.1\r\nHost: in.test\r\nContent-Length: 0\r\n" + extra)
            assert sock.recv(65536).startswith(b"HTTP/1.1 202 ")
    headers = dict(engine.envelopes[0].headers)
    return tuple(headers[name] for name in ("x-forwarded-for", "x-forwarded-proto"))


def test_ingress_believes_a_trusted_proxy() -> None:
    """From a trusted peer, the delivered X-Forwarded-For/-Proto name the original client
    and scheme."""
    extra = b"X-Forwarded-For: 198.51.100.7, 127.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert _delivered_forwarding("127.0.0.1", extra) == ("198.51.100.7", "https")


def test_ingress_ignores_forwarding_headers_from_other_peers() -> None:
    """From a peer that is not trusted, the delivered values are the peer's own."""
    extra = b"X-Forwarded-For: 198.51.100.7\r\nX-Forwarded-Proto: https\r\n\r\n"
    assert _delivered_forwarding("10.9.9.9", extra) == ("127.0.0.1", "http")
