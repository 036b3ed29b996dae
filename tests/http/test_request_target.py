"""The request target forms the ingress's HTTP/1.1 protocol reads (proxy/http/request_target.py)."""

from __future__ import annotations

import pytest

from proxy.http.request_target import BAD_TARGET, USERINFO, TargetError, absolute_form, origin_form


def test_origin_form_is_path_and_query() -> None:
    """``/a/b?x=1`` is its path and query, with no authority."""
    assert origin_form(b"/a/b?x=1") == (b"/a/b", b"x=1", None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (b"http://a.example/x?y=1", (b"/x", b"y=1", b"a.example")),
        (b"HTTPS://a.example:8443/x", (b"/x", b"", b"a.example:8443")),
        (b"http://a.example", (b"/", b"", b"a.example")),
        (b"http://a.example?q", (b"/", b"q", b"a.example")),
        (b"http://[::1]:80/x", (b"/x", b"", b"[::1]:80")),
    ],
)
def test_absolute_form_gives_its_authority(
    url: bytes, expected: tuple[bytes, bytes, bytes | None]
) -> None:
    """An http(s) URL is its path (``/`` when empty), query and authority."""
    assert absolute_form(url) == expected


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        (b"http://user@a.example/x", USERINFO),
        (b"http://u:p@a.example/", USERINFO),
        (b"ftp://a.example/x", BAD_TARGET),
        (b"http:///x", BAD_TARGET),
        (b"http://:80/x", BAD_TARGET),
        (b"*", BAD_TARGET),
        (b"a.example:443", BAD_TARGET),
    ],
)
def test_other_targets_are_refused(url: bytes, refusal: object) -> None:
    """Userinfo, other schemes, an empty host and the asterisk and authority forms are
    refused with a JSON 400 ``invalid_target``."""
    with pytest.raises(TargetError) as caught:
        absolute_form(url)
    assert caught.value.refusal == refusal
    assert caught.value.refusal[0] == 400
    assert b'"invalid_target"' in caught.value.refusal[2]
