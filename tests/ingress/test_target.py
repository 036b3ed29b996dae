"""The delivery URL's path and query (proxy/ingress/target.py)."""

from __future__ import annotations

import pytest

from proxy.config.loading import settings_from_dict
from proxy.errors import BadRequestError, UriTooLongError
from proxy.ingress.routing import Router
from proxy.ingress.target import check_url_length, delivery_path, delivery_query
from proxy.limits import MAX_URL_LENGTH

TARGET = "http://127.0.0.1:9"
ROUTER = Router(
    settings_from_dict(
        {
            "queues": [{"name": "default", "target": TARGET}],
            "routes": [{"prefix": "/api", "queue": "default", "strip_prefix": True}],
        }
    )
)


def _scope(raw_path: bytes, query: bytes = b"") -> dict[str, object]:
    return {"raw_path": raw_path, "path": raw_path.decode("latin-1"), "query_string": query}


def test_characters_a_url_may_not_carry_are_percent_encoded() -> None:
    """A space, a quote, a non-ASCII byte and a lone % are encoded; %XX stays as it is."""
    scope = _scope(b'/a b/"q"/\xc3\xa9/100%/%41')
    assert delivery_path(scope, ROUTER.route("/x", None)) == "/a%20b/%22q%22/%C3%A9/100%25/%41"


def test_the_query_is_encoded_the_same_way_and_empty_when_absent() -> None:
    """``?`` and ``=`` are kept in a query; a space is encoded."""
    assert delivery_query(_scope(b"/", b"a=1&b=x y?")) == "a=1&b=x%20y?"
    assert delivery_query(_scope(b"/")) == ""


@pytest.mark.parametrize(
    "path", [b"/a/../b", b"/a/./b", b"/a/%2e%2E/b", b"/a/..;/b", b"/a%2f..%2fb", b"/a%5c..%5cb"]
)
def test_dot_segments_are_refused_in_every_spelling(path: bytes) -> None:
    """``.`` and ``..`` segments, percent-encoded, between encoded slashes or backslashes,
    or with ``;`` parameters, would climb out of the target's base path."""
    with pytest.raises(BadRequestError) as caught:
        delivery_path(_scope(path), ROUTER.route("/x", None))
    assert caught.value.code == "invalid_path"


def test_a_route_that_strips_its_prefix_delivers_the_rest() -> None:
    """``/api/v1/x`` on the ``/api`` route is delivered as ``/v1/x``; ``/api`` as ``/``."""
    route = ROUTER.route("/api/v1/x", None)
    assert delivery_path(_scope(b"/api/v1/x"), route) == "/v1/x"
    assert delivery_path(_scope(b"/api"), route) == "/"


def test_a_url_longer_than_cloud_tasks_takes_is_414() -> None:
    """target + path + "?" + query may be at most MAX_URL_LENGTH characters."""
    route = ROUTER.route("/x", None)
    room = MAX_URL_LENGTH - len(TARGET)
    check_url_length(route, "/" + "a" * (room - 1), "")
    with pytest.raises(UriTooLongError):
        check_url_length(route, "/" + "a" * (room - 3), "ab")
