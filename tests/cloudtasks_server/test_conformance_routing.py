"""Conformance of queue-level routing (``Queue.http_target``, GA in Cloud Tasks v2) through
the google-cloud-tasks client, sync, async and REST, against our server and the PyPI
emulator (divergences: ``@diverges``; the emulator has no REST surface).

Expected behaviour is Cloud Tasks' as documented: the queue's target is kept and shown,
field masks reach into it, a malformed one is INVALID_ARGUMENT, and it overrides the
task-level URL parts, method, headers and token of every attempt (ALWAYS), or only of
tasks without a URL of their own (IF_NOT_EXISTS), including tasks already in the queue.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from google.api_core import exceptions as gexc
from google.cloud.tasks_v2 import (
    HttpMethod,
    HttpRequest,
    HttpTarget,
    OAuthToken,
    OidcToken,
    PathOverride,
    QueryOverride,
    Queue,
    RateLimits,
    Task,
    UriOverride,
)
from google.protobuf import field_mask_pb2

from tests.cloudtasks_server.conftest import Api, diverges
from tests.cloudtasks_server.test_conformance import make_queue, paused_queue, qname
from tests.support.backend import RecordingBackend

WAIT = 15.0  # seconds for a delivery
Mode = UriOverride.UriOverrideEnforceMode
QUEUE_SA = "queue@p.iam.gserviceaccount.com"


def header(key: str, value: str) -> HttpTarget.HeaderOverride:
    return HttpTarget.HeaderOverride(header=HttpTarget.Header(key=key, value=value))


def claims(authorization: str | None) -> dict[str, Any]:
    assert authorization is not None
    assert authorization.startswith("Bearer ")
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return decoded


def full_target() -> HttpTarget:
    return HttpTarget(
        uri_override=UriOverride(
            scheme=UriOverride.Scheme.HTTPS,
            host="example.net",
            port=8443,
            path_override=PathOverride(path="/q"),
            query_override=QueryOverride(query_params="a=1"),
            uri_override_enforce_mode=Mode.IF_NOT_EXISTS,
        ),
        http_method=HttpMethod.PUT,
        header_overrides=[header("X-Queue", "yes")],
        oidc_token=OidcToken(service_account_email="sa@p.iam.gserviceaccount.com", audience="aud"),
    )


def test_http_target_is_kept(api: Api, parent: str) -> None:
    """A queue created with an http_target returns it, and GetQueue shows it, field by
    field (scheme, host, port, path, query, enforce mode, method, headers, token)."""
    created = make_queue(api, parent, http_target=full_target())
    for queue in (created, api.get_queue(name=created.name)):
        target = queue.http_target
        uri = target.uri_override
        assert uri.scheme == UriOverride.Scheme.HTTPS
        assert (uri.host, uri.port) == ("example.net", 8443)
        assert uri.path_override.path == "/q"
        assert uri.query_override.query_params == "a=1"
        assert uri.uri_override_enforce_mode == Mode.IF_NOT_EXISTS
        assert target.http_method == HttpMethod.PUT
        assert [(h.header.key, h.header.value) for h in target.header_overrides] == [
            ("X-Queue", "yes")
        ]
        assert target.oidc_token.audience == "aud"


@diverges("UpdateQueue of an existing queue changes nothing")
def test_update_mask_reaches_into_http_target(api: Api, parent: str) -> None:
    """A mask http_target.uri_override.host changes the host only; a mask on rate_limits
    leaves the target alone; a mask http_target with no target removes it (the documented
    way to remove queue-level routing)."""
    queue = make_queue(api, parent, http_target=full_target())
    change = Queue(
        name=queue.name, http_target=HttpTarget(uri_override=UriOverride(host="b.example"))
    )
    host_only = field_mask_pb2.FieldMask(paths=["http_target.uri_override.host"])
    api.update_queue(queue=change, update_mask=host_only)
    got = api.get_queue(name=queue.name).http_target
    assert got.uri_override.host == "b.example"
    assert got.uri_override.port == 8443
    assert got.http_method == HttpMethod.PUT
    rate = Queue(name=queue.name, rate_limits=RateLimits(max_dispatches_per_second=7))
    api.update_queue(queue=rate, update_mask=field_mask_pb2.FieldMask(paths=["rate_limits"]))
    assert api.get_queue(name=queue.name).http_target.uri_override.host == "b.example"
    api.update_queue(
        queue=Queue(name=queue.name), update_mask=field_mask_pb2.FieldMask(paths=["http_target"])
    )
    assert "http_target" not in api.get_queue(name=queue.name)


@diverges("accepts any http_target")
@pytest.mark.parametrize(
    "target",
    [
        HttpTarget(uri_override=UriOverride(host="")),
        HttpTarget(uri_override=UriOverride(host="a b")),
        HttpTarget(uri_override=UriOverride(port=70000)),
        HttpTarget(uri_override=UriOverride(port=-1)),
        HttpTarget(uri_override=UriOverride(path_override=PathOverride(path="no-slash"))),
        HttpTarget(uri_override=UriOverride(query_override=QueryOverride(query_params="a b"))),
        HttpTarget(header_overrides=[header("Bad Name", "x")]),
        HttpTarget(header_overrides=[header("X-Ok", "line\nbreak")]),
        HttpTarget(oidc_token=OidcToken(service_account_email="sa@p.iam.gserviceaccount.com")),
        HttpTarget(oauth_token=OAuthToken(service_account_email="sa@p.iam.gserviceaccount.com")),
    ],
    ids=[
        "empty-host",
        "host-with-space",
        "port-70000",
        "negative-port",
        "relative-path",
        "query-with-space",
        "header-name",
        "header-value",
        "oidc-no-audience",
        "oauth-no-scope",
    ],
)
def test_invalid_http_target_is_invalid_argument(api: Api, parent: str, target: HttpTarget) -> None:
    """A queue-level target that cannot be applied: INVALID_ARGUMENT, nothing created
    (the queue-level token needs both the service account and the audience or scope)."""
    name = qname(parent)
    with pytest.raises(gexc.InvalidArgument):
        api.create_queue(parent=parent, queue=Queue(name=name, http_target=target))
    with pytest.raises(gexc.NotFound):
        api.get_queue(name=name)


@diverges("ignores http_target: delivers the task's own request")
def test_http_target_overrides_task_routing(
    api: Api, parent: str, backend: RecordingBackend
) -> None:
    """ALWAYS (the default mode): the queue's scheme, host, port, path and query replace
    the task URL's, its method the task's, its headers replace the task's of the same name
    (case-insensitively) and add the others, and its OIDC token replaces the task's."""
    port = urlsplit(backend.url).port
    target = HttpTarget(
        uri_override=UriOverride(
            scheme=UriOverride.Scheme.HTTP,
            host="127.0.0.1",
            port=port,
            path_override=PathOverride(path="/from-queue"),
            query_override=QueryOverride(query_params="q=1"),
        ),
        http_method=HttpMethod.PUT,
        header_overrides=[header("content-type", "text/plain"), header("X-Queue", "yes")],
        oidc_token=OidcToken(service_account_email=QUEUE_SA, audience="queue-aud"),
    )
    queue = make_queue(api, parent, http_target=target)
    request = HttpRequest(
        url="https://127.0.0.1:9/task?t=1",
        http_method=HttpMethod.POST,
        body=b"payload",
        headers={"Content-Type": "application/json", "X-Task": "kept"},
        oidc_token=OidcToken(service_account_email="task@p.iam.gserviceaccount.com", audience="t"),
    )
    task = api.create_task(parent=queue.name, task=Task(http_request=request))
    [got] = backend.wait_for_count(1, WAIT)
    assert (got.method, got.path, got.query, got.body) == ("PUT", "/from-queue", "q=1", b"payload")
    assert got.header("content-type") == "text/plain"
    assert got.header("x-queue") == "yes"
    assert got.header("x-task") == "kept"
    token = claims(got.header("authorization"))
    assert (token["email"], token["aud"]) == (QUEUE_SA, "queue-aud")
    assert task.http_request.url == "https://127.0.0.1:9/task?t=1"  # the task keeps its own


@diverges("ignores http_target: delivers the task's own request")
def test_if_not_exists_keeps_task_url(api: Api, parent: str, backend: RecordingBackend) -> None:
    """IF_NOT_EXISTS: a task with a URL of its own (every CreateTask task has one) keeps
    it; the queue's method still applies, and a GET sends no body."""
    target = HttpTarget(
        uri_override=UriOverride(
            host="127.0.0.1", port=9, uri_override_enforce_mode=Mode.IF_NOT_EXISTS
        ),
        http_method=HttpMethod.GET,
    )
    queue = make_queue(api, parent, http_target=target)
    request = HttpRequest(url=backend.url + "/own?x=2", body=b"dropped")
    api.create_task(parent=queue.name, task=Task(http_request=request))
    [got] = backend.wait_for_count(1, WAIT)
    assert (got.method, got.path, got.query, got.body) == ("GET", "/own", "x=2", b"")


@diverges("UpdateQueue changes nothing, so the tasks keep their own URL")
def test_routing_applies_to_tasks_already_queued(
    api: Api, parent: str, backend: RecordingBackend
) -> None:
    """Routing set after a task was created applies to it: a paused queue's task goes to
    the new path once the queue has an http_target and is resumed."""
    queue = paused_queue(api, parent)
    api.create_task(
        parent=queue.name, task=Task(http_request=HttpRequest(url=backend.url + "/old"))
    )
    target = HttpTarget(uri_override=UriOverride(path_override=PathOverride(path="/new")))
    api.update_queue(
        queue=Queue(name=queue.name, http_target=target),
        update_mask=field_mask_pb2.FieldMask(paths=["http_target"]),
    )
    api.resume_queue(name=queue.name)
    [got] = backend.wait_for_count(1, WAIT)
    assert got.path == "/new"


@diverges("ignores http_target: sends no queue-level token")
def test_queue_oauth_token_applies_to_every_task(
    api: Api, parent: str, backend: RecordingBackend
) -> None:
    """A queue-level OAuth token is sent with a task that asked for none."""
    oauth = OAuthToken(service_account_email="queue@p.iam.gserviceaccount.com", scope="s1")
    queue = make_queue(api, parent, http_target=HttpTarget(oauth_token=oauth))
    api.create_task(parent=queue.name, task=Task(http_request=HttpRequest(url=backend.url)))
    [got] = backend.wait_for_count(1, WAIT)
    token = claims(got.header("authorization"))
    assert (token["email"], token["scope"]) == ("queue@p.iam.gserviceaccount.com", "s1")


@diverges("accepts (and ignores) any field mask")
@pytest.mark.parametrize(
    "path", ["http_target.nope", "http_target.header_overrides.header", "http_target.http_method.x"]
)
def test_unknown_http_target_mask_is_invalid_argument(api: Api, parent: str, path: str) -> None:
    """A mask path HttpTarget does not have (or one through a repeated or scalar field):
    INVALID_ARGUMENT, and the target is unchanged."""
    queue = make_queue(api, parent, http_target=full_target())
    with pytest.raises(gexc.InvalidArgument):
        api.update_queue(
            queue=Queue(name=queue.name), update_mask=field_mask_pb2.FieldMask(paths=[path])
        )
    assert api.get_queue(name=queue.name).http_target.uri_override.host == "example.net"
