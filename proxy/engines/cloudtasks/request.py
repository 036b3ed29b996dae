"""Envelope -> Cloud Tasks ``CreateTaskRequest`` (an HTTP task), with no I/O.

Built on the raw protobuf classes behind the proto-plus types: this runs once per
accepted request, and the raw classes are several times cheaper to fill.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from google.api_core.gapic_v1 import routing_header
from google.cloud.tasks_v2 import CreateTaskRequest, HttpMethod, HttpRequest, Task
from google.cloud.tasks_v2.services.cloud_tasks.transports.base import DEFAULT_CLIENT_INFO

from proxy.config.settings import QueueSettings, Settings
from proxy.engines.delivery import BODY_METHODS, build_request
from proxy.envelope import Envelope

CREATE_TASK_METHOD = "/google.cloud.tasks.v2.CloudTasks/CreateTask"
# Typed aliases of two untyped google-api-core helpers.
_routing_metadata: Callable[..., tuple[str, str]] = routing_header.to_grpc_metadata
_client_metadata: Callable[[], tuple[str, str]] = DEFAULT_CLIENT_INFO.to_grpc_metadata
_TaskPb: Any = Task.pb()
_HttpRequestPb: Any = HttpRequest.pb()
_CreateTaskRequestPb: Any = CreateTaskRequest.pb()
_METHODS: dict[str, int] = {
    name: int(getattr(HttpMethod, name))
    for name in ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
}


@dataclass(frozen=True, slots=True)
class QueueTarget:
    """A configured queue as Cloud Tasks sees it: its full path and per-task constants."""

    settings: QueueSettings
    path: str  # projects/P/locations/L/queues/Q
    service_account_email: str | None  # the token's account; None: no token
    audience: str | None  # of an OIDC token
    scope: str | None  # of an OAuth token (then no OIDC token)
    dispatch_deadline_ms: int
    metadata: tuple[tuple[str, str], ...]  # routing and client headers of each CreateTask
    relay_base: str | None = None  # relay mode: tasks go to this URL + path, not the target

    def task_name(self, task_id: str) -> str:
        """The full task name for the short id ``task_id``."""
        return f"{self.path}/tasks/{task_id}"


def queue_targets(settings: Settings) -> dict[str, QueueTarget]:
    """One :class:`QueueTarget` per configured queue, by queue name.

    The token's identity is the queue's service account, else the engine-wide one; an
    OIDC token's audience is the queue's, else the target's origin
    (``scheme://host[:port]``), so a path or query never breaks the token check on the
    backend. ``auth = "oauth"`` asks for an OAuth token with the queue's scope instead;
    ``auth = "none"`` for no token at all. A queue in relay mode gets the relay's URL with
    the queue's name as the tasks' target and an OIDC token for the relay instead (the
    relay adds the backend's own token).
    """
    ct = settings.cloudtasks
    parent = f"projects/{ct.project}/locations/{ct.location}"
    client_header = _client_metadata()
    targets: dict[str, QueueTarget] = {}
    for queue in settings.queues:
        account = None if queue.auth == "none" else queue.service_account_email
        account = account or (None if queue.auth == "none" else ct.service_account_email)
        path = f"{parent}/queues/{queue.name}"
        targets[queue.name] = QueueTarget(
            settings=queue,
            path=path,
            service_account_email=account,
            audience=queue.oidc_audience if account and not queue.oauth else None,
            scope=queue.oauth_scope if account and queue.oauth else None,
            dispatch_deadline_ms=round(queue.dispatch_deadline * 1000),
            metadata=(_routing_metadata((("parent", path),)), client_header),
        )
        if ct.relays(queue):
            targets[queue.name] = replace(
                targets[queue.name],
                service_account_email=ct.relay_service_account_email,
                audience=ct.relay_token_audience,
                scope=None,
                relay_base=f"{(ct.relay_url or '').rstrip('/')}/{queue.name}",
            )
    return targets


def create_task_message(target: QueueTarget, envelope: Envelope) -> Any:
    """The CreateTask request for ``envelope`` as a raw protobuf message: a named HTTP task
    to the queue's target.

    The body is sent only for POST, PUT and PATCH (Cloud Tasks refuses it otherwise);
    ``schedule_time`` (Unix seconds) is passed on, truncated to microseconds.
    """
    queue = target.settings
    if target.relay_base is not None:
        queue = replace(queue, target=target.relay_base)
    outgoing = build_request(queue, envelope)
    http = _HttpRequestPb(
        url=outgoing.url, http_method=_METHODS[outgoing.method], headers=outgoing.headers
    )
    if outgoing.method in BODY_METHODS and outgoing.body:
        http.body = outgoing.body
    if target.scope is not None:
        http.oauth_token.service_account_email = target.service_account_email or ""
        http.oauth_token.scope = target.scope
    elif target.service_account_email:
        http.oidc_token.service_account_email = target.service_account_email
        http.oidc_token.audience = target.audience or ""
    task = _TaskPb(name=target.task_name(envelope.id), http_request=http)
    task.dispatch_deadline.FromMilliseconds(target.dispatch_deadline_ms)
    if envelope.schedule_time is not None:
        task.schedule_time.FromMicroseconds(int(envelope.schedule_time * 1_000_000))
    return _CreateTaskRequestPb(parent=target.path, task=task)


def create_task_request(target: QueueTarget, envelope: Envelope) -> CreateTaskRequest:
    """:func:`create_task_message` as the client library's ``CreateTaskRequest``."""
    request: CreateTaskRequest = CreateTaskRequest.wrap(create_task_message(target, envelope))
    return request


def serialize(message: Any) -> bytes:
    """Wire bytes of a raw protobuf message."""
    data: bytes = message.SerializeToString()
    return data
