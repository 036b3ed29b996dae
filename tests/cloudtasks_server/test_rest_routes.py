"""The route table against Google's own: the HTTP rules google-cloud-tasks' REST transport
was generated from."""

from __future__ import annotations

import grpc
import pytest
from google.cloud.tasks_v2.services.cloud_tasks.transports import rest_base

from proxy.cloudtasks_server.rest_routes import BINDINGS, route
from proxy.cloudtasks_server.validation import ApiError


def _client_rules() -> dict[str, tuple[str, str, str | None]]:
    base = rest_base._BaseCloudTasksRestTransport
    rules = {}
    for name in dir(base):
        rule_class = getattr(base, name)
        if name.startswith("_Base") and hasattr(rule_class, "_get_http_options"):
            [rule] = rule_class._get_http_options()
            rules[name[len("_Base") :]] = (rule["method"].upper(), rule["uri"], rule.get("body"))
    return rules


def test_every_client_binding_is_in_the_table() -> None:
    """Each HTTP rule the client library uses is a binding here, with the same method,
    template and body."""
    ours = {b.rpc: (b.method, b.template, b.body) for b in BINDINGS}
    rules = _client_rules()
    assert len(rules) >= 20
    for rpc, rule in rules.items():
        assert ours.get(rpc) == rule, rpc


def test_route_variables_and_refusals() -> None:
    """A match gives the percent-decoded path variables; an unimplemented binding is
    UNIMPLEMENTED, a method no binding takes on the path NOT_FOUND."""
    queue = "projects/my%3Aproj/locations/l/queues/q"
    binding, variables = route("POST", f"/v2/{queue}/tasks/t1:run", frozenset({"RunTask"}))
    assert (binding.rpc, variables) == (
        "RunTask",
        {"name": "projects/my:proj/locations/l/queues/q/tasks/t1"},
    )
    with pytest.raises(ApiError) as unimplemented:
        route("POST", f"/v2/{queue}:getIamPolicy", frozenset({"RunTask"}))
    assert unimplemented.value.code == grpc.StatusCode.UNIMPLEMENTED
    for method, path in (("PUT", f"/v2/{queue}"), ("GET", "/v1/x"), ("GET", "/v2/projects")):
        with pytest.raises(ApiError) as missing:
            route(method, path, frozenset({"GetQueue"}))
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
