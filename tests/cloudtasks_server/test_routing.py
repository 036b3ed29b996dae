"""Queue-level routing applied to one attempt (proxy/cloudtasks_server/routing.py): the URL
parts, the method and body, the headers and the token request, without a server."""

from __future__ import annotations

import json

import pytest
from google.cloud.tasks_v2 import (
    HttpMethod,
    HttpTarget,
    OidcToken,
    PathOverride,
    QueryOverride,
    UriOverride,
)

from proxy.cloudtasks_server import routing
from proxy.cloudtasks_server.routing import UriParts


def parsed(target: HttpTarget) -> routing.QueueRouting:
    found = routing.parse(HttpTarget.serialize(target))
    assert found is not None
    return found


@pytest.mark.parametrize(
    ("parts", "url", "expected"),
    [
        (
            UriParts(host="b.example"),
            "https://a.example:8080/p?q=1",
            "https://b.example:8080/p?q=1",
        ),
        (UriParts(port=0), "https://a.example:8080/p", "https://a.example/p"),
        (UriParts(port=81), "http://a.example/p", "http://a.example:81/p"),
        (UriParts(scheme="http"), "https://a.example/p", "http://a.example/p"),
        (UriParts(path=""), "https://a.example/p/q?x=1", "https://a.example?x=1"),
        (UriParts(query=""), "https://a.example/p?x=1", "https://a.example/p"),
        (UriParts(path="/n", query="y=2"), "https://a.example/p?x=1", "https://a.example/n?y=2"),
        (UriParts(port=9), "http://[::1]:8000/p", "http://[::1]:9/p"),
        (UriParts(host="h"), "http://user:pw@a.example/p", "http://user:pw@h/p"),
    ],
    ids=[
        "host",
        "port-0-clears",
        "port-added",
        "scheme",
        "empty-path-clears",
        "empty-query-clears",
        "path-and-query",
        "ipv6-kept",
        "userinfo-kept",
    ],
)
def test_uri_parts_replace_only_what_they_set(parts: UriParts, url: str, expected: str) -> None:
    """Each part given replaces the task URL's; the others stay as they were."""
    assert parts.apply(url) == expected


def test_unspecified_scheme_means_https_and_if_not_exists_keeps_the_url() -> None:
    """SCHEME_UNSPECIFIED set explicitly is HTTPS; the IF_NOT_EXISTS mode leaves a task's
    own URL alone."""
    always = parsed(
        HttpTarget(uri_override=UriOverride(scheme=UriOverride.Scheme.SCHEME_UNSPECIFIED))
    )
    assert always.url("http://a.example/p") == "https://a.example/p"
    mode = UriOverride.UriOverrideEnforceMode.IF_NOT_EXISTS
    keep = parsed(HttpTarget(uri_override=UriOverride(host="b", uri_override_enforce_mode=mode)))
    assert keep.url("http://a.example/p") == "http://a.example/p"


def test_method_headers_and_body() -> None:
    """The queue's method replaces the task's (no body with GET); its headers replace the
    task's of the same name whatever the case, are added otherwise, and the names Cloud
    Tasks computes itself are ignored."""
    target = HttpTarget(
        uri_override=UriOverride(path_override=PathOverride(path="/x")),
        http_method=HttpMethod.GET,
        header_overrides=[
            HttpTarget.HeaderOverride(header=HttpTarget.Header(key="content-type", value="a/b")),
            HttpTarget.HeaderOverride(header=HttpTarget.Header(key="Host", value="evil")),
            HttpTarget.HeaderOverride(header=HttpTarget.Header(key="X-CloudTasks-Foo", value="1")),
        ],
    )
    method, headers, body = parsed(target).request("POST", {"Content-Type": "c/d", "X": "1"}, b"b")
    assert (method, body) == ("GET", b"")
    assert headers == {"X": "1", "content-type": "a/b"}
    put = parsed(HttpTarget(http_method=HttpMethod.PUT)).request("POST", {}, b"kept")
    assert put == ("PUT", {}, b"kept")


def test_token_requests() -> None:
    """The queue's token replaces the task's; without one, the task's OIDC audience left
    unset follows the URL the attempt goes to, and an explicit one stays."""
    oidc = OidcToken(service_account_email="q@p.iam.gserviceaccount.com", audience="qa")
    queue_token = parsed(HttpTarget(oidc_token=oidc)).token_for(None, "http://a/", "http://a/")
    assert queue_token is not None
    assert json.loads(queue_token)["audience"] == "qa"
    moved = parsed(HttpTarget(uri_override=UriOverride(host="b")))
    implicit = json.dumps({"kind": "oidc", "email": "t@p", "audience": "http://a/p",
                           "explicit_audience": False})  # fmt: skip
    followed = moved.token_for(implicit, "http://a/p", moved.url("http://a/p"))
    assert followed is not None
    assert json.loads(followed)["audience"] == "http://b/p"
    explicit = json.dumps({"kind": "oidc", "email": "t@p", "audience": "mine",
                           "explicit_audience": True})  # fmt: skip
    assert moved.token_for(explicit, "http://a/p", "http://b/p") == explicit


def test_no_target_is_no_routing() -> None:
    """An empty stored target means no routing at all."""
    assert routing.parse(b"") is None
    assert parsed(
        HttpTarget(uri_override=UriOverride(query_override=QueryOverride()))
    ).uri == UriParts(query="")
