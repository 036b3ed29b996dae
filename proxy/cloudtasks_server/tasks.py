"""Task resources: CreateTask validation, the stored row -> ``Task`` message, and the
unsigned local token that stands in for an OIDC (or OAuth) token with
``--unsigned-tokens`` (by default tokens are signed: ``signing.py``).

The unsigned token is **not a credential**: a JWT with ``"alg": "none"``, issuer
``ingest-proxy-local`` and no signature. A backend that verifies signatures, as it must in
production, rejects it.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
from typing import Any
from urllib.parse import urlsplit

from google.cloud.tasks_v2 import (
    Attempt,
    HttpMethod,
    HttpRequest,
    HttpTarget,
    OAuthToken,
    OidcToken,
    Task,
)

from proxy import limits
from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.validation import QueueName, invalid
from proxy.engines.local.store.server import NewTask

LOCAL_ISSUER = "ingest-proxy-local"
TOKEN_LIFETIME = 3600  # seconds
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_DROPPED_HEADERS = ("host", "content-length", "user-agent")
_DROPPED_PREFIXES = ("x-google-", "x-appengine-", "x-cloudtasks-")
NO_RESPONSE_DEADLINE = -4  # last_status: no answer within the dispatch deadline
NO_RESPONSE_ERROR = -14  # last_status: connection refused, reset, ...


def _timestamp(value: datetime.datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def validate(queue: QueueName, task: Task, *, now: float, size: int, max_bytes: int) -> NewTask:
    """Check a CreateTask's task against the documented limits (INVALID_ARGUMENT)."""
    if size > max_bytes:
        raise invalid(f"Task size too large: {size} bytes, the limit is {max_bytes}.")
    if "app_engine_http_request" in task or "http_request" not in task:
        raise invalid("Only HTTP tasks (Task.http_request) are supported by this server.")
    if task.name:
        task_queue, task_id = v.parse_task_name(task.name)
        if task_queue != queue:
            raise invalid(f"The task name {task.name!r} is not in the queue {queue.path!r}.")
        named = True
    else:
        task_id, named = str(secrets.randbits(63)), False
    request: HttpRequest = task.http_request
    url = request.url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid(f"HttpRequest.url must be an http:// or https:// URL, not {url!r}.")
    if len(url) > limits.MAX_URL_LENGTH:
        raise invalid(f"HttpRequest.url is longer than {limits.MAX_URL_LENGTH} characters.")
    method = HttpMethod(request.http_method).name
    method = "POST" if method == "HTTP_METHOD_UNSPECIFIED" else method
    if request.body and method not in BODY_METHODS:
        raise invalid(f"A body is allowed only with POST, PUT or PATCH, not {method}.")
    headers = tuple((key, value) for key, value in request.headers.items() if kept_header(key))
    if sum(len(k) + len(val) + 4 for k, val in request.headers.items()) >= limits.MAX_HEADER_BYTES:
        raise invalid("HttpRequest.headers must total less than 80 KB.")
    token = token_request(request, url)
    deadline = v.seconds(task.dispatch_deadline) if "dispatch_deadline" in task else None
    if deadline is None:
        deadline = v.DEFAULT_DISPATCH_DEADLINE
    if not limits.MIN_DISPATCH_DEADLINE <= deadline <= limits.MAX_DISPATCH_DEADLINE:
        raise invalid("Task.dispatch_deadline must be between 15 seconds and 30 minutes.")
    schedule = _timestamp(task.schedule_time) if "schedule_time" in task else None
    if schedule is not None and schedule > now + limits.MAX_SCHEDULE_AHEAD:
        raise invalid("Task.schedule_time must be at most 30 days in the future.")
    schedule = now if schedule is None or schedule < now else round(schedule, 6)
    return NewTask(
        name=f"{queue.path}/tasks/{task_id}",
        task_id=task_id,
        named=named,
        url=url,
        method=method,
        headers=headers,
        body=bytes(request.body),
        token=token,
        dispatch_deadline=round(deadline, 3),
        schedule_time=schedule,
        create_time=round(now, 6),
    )


def kept_header(name: str) -> bool:
    """Whether a header given by the client is sent (Cloud Tasks computes Host,
    Content-Length and User-Agent itself and drops X-Google-*, X-AppEngine-* and
    X-CloudTasks-*)."""
    lower = name.lower()
    return lower not in _DROPPED_HEADERS and not lower.startswith(_DROPPED_PREFIXES)


def token_request(request: HttpRequest | HttpTarget, url: str) -> str | None:
    """The JSON of the OIDC/OAuth token ``request`` (a task's or a queue's) asks for,
    ``None`` when it asks for none; an OIDC audience left unset is ``url``."""
    if "oidc_token" in request:
        oidc: OidcToken = request.oidc_token
        if not oidc.service_account_email:
            raise invalid("OidcToken.service_account_email is required.")
        audience = oidc.audience or url
        return json.dumps(
            {
                "kind": "oidc",
                "email": oidc.service_account_email,
                "audience": audience,
                "explicit_audience": bool(oidc.audience),
            }
        )
    if "oauth_token" in request:
        oauth: OAuthToken = request.oauth_token
        if not oauth.service_account_email:
            raise invalid("OAuthToken.service_account_email is required.")
        scope = oauth.scope or "https://www.googleapis.com/auth/cloud-platform"
        return json.dumps({"kind": "oauth", "email": oauth.service_account_email, "scope": scope})
    return None


def _b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def local_token(token_json: str, now: float) -> str:
    """An unsigned JWT (``alg: none``) standing in for the token Cloud Tasks would mint:
    ``iss`` ingest-proxy-local, ``aud`` the audience (OIDC) or ``scope`` (OAuth),
    ``email``/``sub`` the service account. Not a credential (see the module docstring)."""
    spec = json.loads(token_json)
    claims: dict[str, Any] = {
        "iss": LOCAL_ISSUER,
        "sub": spec["email"],
        "email": spec["email"],
        "iat": int(now),
        "exp": int(now) + TOKEN_LIFETIME,
        "warning": "unsigned local token from ingest-proxy cloudtasks-server; not a credential",
    }
    if spec["kind"] == "oidc":
        claims["aud"] = spec["audience"]
    else:
        claims["scope"] = spec["scope"]
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


def _stamp(value: float | None) -> datetime.datetime | None:
    if value is None:
        return None
    return datetime.datetime.fromtimestamp(value, tz=datetime.UTC)


def rpc_status(status: int | None) -> tuple[int, str] | None:
    """The Attempt.response_status of an attempt as (google.rpc.Code, message): the HTTP
    status mapped as Google APIs map them; ``None`` while no answer is recorded."""
    if status is None:
        return None
    if status == NO_RESPONSE_DEADLINE:
        return 4, "No response within the dispatch deadline."
    if status == NO_RESPONSE_ERROR:
        return 14, "The target could not be reached."
    codes = {400: 3, 401: 16, 403: 7, 404: 5, 409: 10, 429: 8, 499: 1, 501: 12, 503: 14, 504: 4}
    if 200 <= status < 300:
        code = 0
    elif status in codes:
        code = codes[status]
    elif 400 <= status < 500:
        code = 9
    elif status >= 500:
        code = 13
    else:
        code = 2
    return code, f"HTTP status {status}."


def to_message(row: tuple[Any, ...], view: int) -> Task:
    """A Task resource from a task row of the server's store (``TASK_COLUMNS`` order);
    the BASIC view (the default) omits the body."""
    (_, name, url, method, headers, body, token, eta, create_time, deadline, dispatches,
     responses, first_dispatch, last_schedule, last_dispatch, last_response,
     last_status) = row  # fmt: skip
    full = view == int(Task.View.FULL)
    request = HttpRequest(
        url=url,
        http_method=HttpMethod.__members__[method],
        headers=dict(_joined(json.loads(headers))),
        body=bytes(body) if full else b"",
    )
    if token:
        spec = json.loads(token)
        if spec["kind"] == "oidc":
            audience = spec["audience"] if spec.get("explicit_audience") else ""
            request.oidc_token = OidcToken(service_account_email=spec["email"], audience=audience)
        else:
            request.oauth_token = OAuthToken(
                service_account_email=spec["email"], scope=spec["scope"]
            )
    task = Task(
        name=name,
        http_request=request,
        schedule_time=_stamp(eta),
        create_time=_stamp(create_time),
        dispatch_deadline=datetime.timedelta(seconds=deadline),
        dispatch_count=dispatches,
        response_count=responses,
        view=Task.View.FULL if full else Task.View.BASIC,
    )
    if first_dispatch is not None:
        task.first_attempt = Attempt(dispatch_time=_stamp(first_dispatch))
    if last_dispatch is not None:
        last = Attempt(
            schedule_time=_stamp(last_schedule),
            dispatch_time=_stamp(last_dispatch),
            response_time=_stamp(last_response),
        )
        status = rpc_status(last_status)
        if status is not None:
            response = Attempt.pb(last).response_status
            response.code, response.message = status
        task.last_attempt = last
    return task


def _joined(pairs: list[list[str]]) -> list[tuple[str, str]]:
    joined: dict[str, str] = {}
    for key, value in pairs:
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return list(joined.items())
