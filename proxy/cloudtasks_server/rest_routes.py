"""The HTTP bindings of Cloud Tasks v2 (``google.api.http`` of ``cloudtasks.proto`` and its
Locations and Operations mixins), and the match of a request line against them.

A path no binding's template matches, or one matched only with another HTTP method (a
``PUT`` on a queue), is NOT_FOUND, as Google's front end answers; a binding of a method this
server does not implement (IAM, CMEK, BufferTask, ...) is UNIMPLEMENTED.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote

import grpc

from proxy.cloudtasks_server.validation import ApiError

_VARIABLE_RE = re.compile(r"\{([a-z_.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Binding:
    """One HTTP rule: ``method`` and ``template`` (gRPC transcoding syntax) of ``rpc``;
    ``body`` is ``None`` (no body), ``"*"`` (the whole request) or the field the body is."""

    rpc: str
    method: str
    template: str
    body: str | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pattern", _compile(self.template))

    def match(self, path: str) -> dict[str, str] | None:
        """The path variables (field path -> value, percent-decoded) when ``path`` (the raw
        request path) fits the template, else ``None``."""
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        names = _VARIABLE_RE.findall(self.template)
        return {
            name: unquote(value) for (name, _), value in zip(names, found.groups(), strict=True)
        }


def _compile(template: str) -> re.Pattern[str]:
    out, last = [], 0
    for variable in _VARIABLE_RE.finditer(template):
        out.append(re.escape(template[last : variable.start()]))
        segments = (variable.group(2) or "*").split("/")
        out.append("(" + "/".join("[^/]+" if s == "*" else re.escape(s) for s in segments) + ")")
        last = variable.end()
    out.append(re.escape(template[last:]))
    return re.compile("".join(out))


_QUEUE = "projects/*/locations/*/queues/*"
_TASK = f"{_QUEUE}/tasks/*"
BINDINGS = (
    Binding("ListQueues", "GET", "/v2/{parent=projects/*/locations/*}/queues"),
    Binding("CreateQueue", "POST", "/v2/{parent=projects/*/locations/*}/queues", "queue"),
    Binding("GetQueue", "GET", f"/v2/{{name={_QUEUE}}}"),
    Binding("UpdateQueue", "PATCH", f"/v2/{{queue.name={_QUEUE}}}", "queue"),
    Binding("DeleteQueue", "DELETE", f"/v2/{{name={_QUEUE}}}"),
    Binding("PurgeQueue", "POST", f"/v2/{{name={_QUEUE}}}:purge", "*"),
    Binding("PauseQueue", "POST", f"/v2/{{name={_QUEUE}}}:pause", "*"),
    Binding("ResumeQueue", "POST", f"/v2/{{name={_QUEUE}}}:resume", "*"),
    Binding("GetIamPolicy", "POST", f"/v2/{{resource={_QUEUE}}}:getIamPolicy", "*"),
    Binding("SetIamPolicy", "POST", f"/v2/{{resource={_QUEUE}}}:setIamPolicy", "*"),
    Binding("TestIamPermissions", "POST", f"/v2/{{resource={_QUEUE}}}:testIamPermissions", "*"),
    Binding("ListTasks", "GET", f"/v2/{{parent={_QUEUE}}}/tasks"),
    Binding("CreateTask", "POST", f"/v2/{{parent={_QUEUE}}}/tasks", "*"),
    Binding("BatchCreateTasks", "POST", f"/v2/{{parent={_QUEUE}}}/tasks:batchCreate", "*"),
    Binding("BatchDeleteTasks", "POST", f"/v2/{{parent={_QUEUE}}}/tasks:batchDelete", "*"),
    Binding("GetTask", "GET", f"/v2/{{name={_TASK}}}"),
    Binding("DeleteTask", "DELETE", f"/v2/{{name={_TASK}}}"),
    Binding("RunTask", "POST", f"/v2/{{name={_TASK}}}:run", "*"),
    Binding("BufferTask", "POST", f"/v2/{{queue={_QUEUE}}}/tasks/{{task_id=*}}:buffer", "*"),
    Binding("GetCmekConfig", "GET", "/v2/{name=projects/*/locations/*/cmekConfig}"),
    Binding(
        "UpdateCmekConfig",
        "PATCH",
        "/v2/{cmek_config.name=projects/*/locations/*/cmekConfig}",
        "cmek_config",
    ),
    Binding("ListLocations", "GET", "/v2/{name=projects/*}/locations"),
    Binding("GetLocation", "GET", "/v2/{name=projects/*/locations/*}"),
    Binding("GetOperation", "GET", "/v2/{name=projects/*/locations/*/operations/*}"),
)


def route(method: str, path: str, implemented: frozenset[str]) -> tuple[Binding, dict[str, str]]:
    """The binding for ``method`` on the raw ``path`` and its path variables. NOT_FOUND when
    no binding takes this method and path; UNIMPLEMENTED when its RPC is not in
    ``implemented``."""
    for binding in BINDINGS:
        if binding.method != method:
            continue
        variables = binding.match(path)
        if variables is None:
            continue
        if binding.rpc not in implemented:
            raise ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"{binding.rpc} ({method} {path}) is not implemented by this server.",
            )
        return binding, variables
    raise ApiError(
        grpc.StatusCode.NOT_FOUND,
        f"The requested URL {path} (method {method}) matches no Cloud Tasks v2 method.",
    )
