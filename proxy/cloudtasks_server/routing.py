"""Queue-level routing: a queue's ``http_target`` (Cloud Tasks v2), checked when the queue
is created or updated and applied to every attempt of the queue's HTTP tasks.

Precedence, as Cloud Tasks documents it ("configuring routing at the queue level
overrides routing set at the task level"; it applies to the tasks already in the queue
and to those added later, so it is applied at each attempt, and GetTask still shows the
task's own request):

- ``uri_override``: in the ALWAYS mode (the default) each part it sets replaces that part
  of the task's URL: ``scheme`` (HTTP or HTTPS; SCHEME_UNSPECIFIED means HTTPS), ``host``,
  ``port`` (0 removes the port), ``path_override.path`` (empty removes the path) and
  ``query_override.query_params`` (empty removes the query). In the IF_NOT_EXISTS mode it
  applies only to a task without routing of its own; every task made by CreateTask has
  its URL (the field is required), so such a queue delivers to the tasks' own URLs.
- ``http_method``: when set, replaces the task's method; with a method that takes no body
  (GET, HEAD, DELETE, OPTIONS) the body is not sent.
- ``header_overrides``: each header replaces the task's header of that name (names compare
  case-insensitively) or is added; the names Cloud Tasks computes itself (Host,
  Content-Length, User-Agent, X-Google-*, X-AppEngine-*, X-CloudTasks-*) are ignored.
- ``oidc_token`` / ``oauth_token``: replace the task's token request, if any, for every
  task (both the service account and the audience, or the scope, must be given).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from google.cloud.tasks_v2 import HttpMethod, HttpTarget, UriOverride

from proxy import limits
from proxy.cloudtasks_server.tasks import BODY_METHODS, kept_header, token_request
from proxy.cloudtasks_server.validation import invalid

_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)$")
_HEADER_NAME_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_URL_PART_BAD = re.compile(r"[\x00-\x20\x7f#]")
MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class UriParts:
    """The parts of a task URL a queue replaces (``None``: keep the task's; ``port`` 0:
    no port; ``path``/``query`` empty: none)."""

    scheme: str | None = None
    host: str | None = None
    port: int | None = None
    path: str | None = None
    query: str | None = None

    def apply(self, url: str) -> str:
        """``url`` with these parts replaced."""
        parts = urlsplit(url)
        userinfo, at, _ = parts.netloc.rpartition("@")
        host = parts.hostname or ""
        if ":" in host:  # an IPv6 literal
            host = f"[{host}]"
        port = parts.port
        if self.host is not None:
            host = self.host
        if self.port is not None:
            port = self.port or None
        netloc = f"{userinfo}{at}{host}" + (f":{port}" if port else "")
        return urlunsplit(
            (
                self.scheme or parts.scheme,
                netloc,
                parts.path if self.path is None else self.path,
                parts.query if self.query is None else self.query,
                "",
            )
        )


@dataclass(frozen=True, slots=True)
class QueueRouting:
    """A queue's ``http_target``, ready to apply to an attempt. ``uri`` is ``None`` when
    the queue overrides no URL part (or only tasks without a URL: IF_NOT_EXISTS);
    ``token`` is the token request as ``tasks.token_request`` makes it."""

    uri: UriParts | None
    method: str | None
    headers: tuple[tuple[str, str], ...]
    token: str | None

    def url(self, url: str) -> str:
        """The URL an attempt of a task whose own URL is ``url`` goes to."""
        return url if self.uri is None else self.uri.apply(url)

    def request(
        self, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[str, dict[str, str], bytes]:
        """The method, headers and body of an attempt, from the task's own."""
        if self.method is not None:
            method = self.method
            if method not in BODY_METHODS:
                body = b""
        if self.headers:
            replaced = {name.lower() for name, _ in self.headers}
            headers = {k: v for k, v in headers.items() if k.lower() not in replaced}
            headers.update(self.headers)
        return method, headers, body

    def token_for(self, task_token: str | None, task_url: str, url: str) -> str | None:
        """The token request of an attempt to ``url``: the queue's, else the task's (an
        OIDC audience left unset follows the URL the attempt goes to)."""
        if self.token is not None:
            return self.token
        if task_token is None or url == task_url:
            return task_token
        spec = json.loads(task_token)
        if spec["kind"] == "oidc" and not spec.get("explicit_audience"):
            spec["audience"] = url
            return json.dumps(spec)
        return task_token


def check(target: HttpTarget) -> None:
    """INVALID_ARGUMENT unless ``target`` is a usable queue-level target."""
    if "uri_override" in target:
        _check_uri(target.uri_override)
    size = 0
    for override in target.header_overrides:
        key, value = override.header.key, override.header.value
        if not _HEADER_NAME_RE.match(key):
            raise invalid(f"HttpTarget.header_overrides: {key!r} is not a header name.")
        if any((ord(c) < 0x20 and c != "\t") or ord(c) == 0x7F for c in value):
            raise invalid(
                f"HttpTarget.header_overrides: the value of {key} has control characters."
            )
        size += len(key) + len(value) + 4
    if size >= limits.MAX_HEADER_BYTES:
        raise invalid("HttpTarget.header_overrides must total less than 80 KB.")
    oidc, oauth = target.oidc_token, target.oauth_token
    if "oidc_token" in target and not (oidc.service_account_email and oidc.audience):
        raise invalid(
            "HttpTarget.oidc_token needs both service_account_email and audience at the"
            " queue level."
        )
    if "oauth_token" in target and not (oauth.service_account_email and oauth.scope):
        raise invalid(
            "HttpTarget.oauth_token needs both service_account_email and scope at the queue level."
        )


def _check_uri(uri: UriOverride) -> None:
    if "host" in uri and not _HOST_RE.match(uri.host):
        raise invalid(f"UriOverride.host must be a host name or address, not {uri.host!r}.")
    if "port" in uri and not 0 <= uri.port <= MAX_PORT:
        raise invalid(f"UriOverride.port must be in [0, {MAX_PORT}] (0: no port).")
    path = uri.path_override.path
    if path and (not path.startswith("/") or _URL_PART_BAD.search(path) or "?" in path):
        raise invalid(
            f"UriOverride.path_override.path must be empty or an absolute path, not {path!r}."
        )
    query = uri.query_override.query_params
    if _URL_PART_BAD.search(query):
        raise invalid("UriOverride.query_override.query_params has spaces, controls or '#'.")


def parse(serialized: bytes) -> QueueRouting | None:
    """The routing of a stored ``http_target`` (``None`` when there is none)."""
    if not serialized:
        return None
    target = HttpTarget.deserialize(serialized)
    uri: UriParts | None = None
    if "uri_override" in target:
        override: UriOverride = target.uri_override
        mode = override.uri_override_enforce_mode
        if mode != UriOverride.UriOverrideEnforceMode.IF_NOT_EXISTS:
            scheme = None
            if "scheme" in override:
                scheme = "http" if override.scheme == UriOverride.Scheme.HTTP else "https"
            uri = UriParts(
                scheme=scheme,
                host=override.host if "host" in override else None,
                port=int(override.port) if "port" in override else None,
                path=override.path_override.path if "path_override" in override else None,
                query=(
                    override.query_override.query_params if "query_override" in override else None
                ),
            )
    method = None
    if target.http_method != HttpMethod.HTTP_METHOD_UNSPECIFIED:
        method = HttpMethod(target.http_method).name
    headers = tuple(
        (o.header.key, o.header.value) for o in target.header_overrides if kept_header(o.header.key)
    )
    return QueueRouting(uri, method, headers, token_request(target, ""))
