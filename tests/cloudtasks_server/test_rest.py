"""The REST (JSON) surface seen without a client library (as curl or gcloud see it)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from google.cloud.tasks_v2 import Queue

from proxy.cloudtasks_server.rest import RestApp
from tests.support.cloudtasks_server import ServerThread

PARENT = "projects/p/locations/rest"


def test_rest_answers_enum_names_and_google_errors(local_server: ServerThread) -> None:
    """Resources come back with enum names (state RUNNING, httpMethod POST); an error is
    {"error": {code, message, status}} with the HTTP status of its gRPC code."""
    base = f"http://{local_server.rest_host}/v2"
    queue = f"{PARENT}/queues/r-{uuid.uuid4().hex[:8]}"
    with httpx.Client(timeout=10) as http:
        created = http.post(f"{base}/{PARENT}/queues", json={"name": queue})
        assert created.status_code == 200
        assert created.json()["state"] == "RUNNING"
        assert created.json()["rateLimits"]["maxBurstSize"] == 100
        request = {"url": "http://127.0.0.1:9/x", "body": "aGk="}
        body = {"task": {"httpRequest": request}, "responseView": "FULL"}
        task = http.post(f"{base}/{queue}/tasks", json=body)
        assert task.status_code == 200
        assert task.json()["httpRequest"]["httpMethod"] == "POST"
        assert task.json()["httpRequest"]["body"] == "aGk="
        missing = http.get(f"{base}/{PARENT}/queues/nope")
        assert missing.status_code == 404
        error = missing.json()["error"]
        assert (error["code"], error["status"]) == (404, "NOT_FOUND")
        assert error["message"] == f"Queue {PARENT}/queues/nope does not exist."
        twice = http.post(f"{base}/{PARENT}/queues", json={"name": queue})
        assert (twice.status_code, twice.json()["error"]["status"]) == (409, "ALREADY_EXISTS")
        bad = http.post(f"{base}/{queue}/tasks", content=b"not json")
        assert (bad.status_code, bad.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
        http.post(f"{base}/{queue}:pause")
        assert http.get(f"{base}/{queue}").json()["state"] == "PAUSED"


# ------------------------------------------------- transcoding, as Google's front end does


def _http(server: ServerThread) -> httpx.Client:
    return httpx.Client(base_url=f"http://{server.rest_host}/v2/", timeout=10)


def _new_queue(http: httpx.Client, parent: str = PARENT, **fields: Any) -> dict[str, Any]:
    name = f"{parent}/queues/r-{uuid.uuid4().hex[:8]}"
    created = http.post(f"{parent}/queues", json={"name": name, **fields})
    assert created.status_code == 200, created.text
    queue: dict[str, Any] = created.json()
    return queue


def _bad_request(response: httpx.Response, message: str, field: str | None) -> None:
    """A 400 INVALID_ARGUMENT with ``message`` and its google.rpc.BadRequest detail."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["code"], error["status"], error["message"]) == (400, "INVALID_ARGUMENT", message)
    violation = (
        {"description": message} if field is None else {"field": field, "description": message}
    )
    assert error["details"] == [
        {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    ]


@pytest.mark.parametrize(
    "mask", ["rate_limits.max_dispatches_per_second", "rateLimits.maxDispatchesPerSecond"]
)
def test_update_mask_in_either_form(local_server: ServerThread, mask: str) -> None:
    """UpdateQueue takes the field mask as snake_case (gRPC's and Google's samples' form, what
    the Node REST client sends) or lowerCamel, and changes only the masked field."""
    with _http(local_server) as http:
        queue = _new_queue(
            http, rateLimits={"maxDispatchesPerSecond": 5, "maxConcurrentDispatches": 7}
        )
        change = {"rateLimits": {"maxDispatchesPerSecond": 20, "maxConcurrentDispatches": 99}}
        updated = http.patch(queue["name"], params={"updateMask": mask}, json=change)
        assert updated.status_code == 200, updated.text
        limits = http.get(queue["name"]).json()["rateLimits"]
    assert (limits["maxDispatchesPerSecond"], limits["maxConcurrentDispatches"]) == (20, 7)


def test_unknown_json_name_is_refused_and_nothing_is_created(local_server: ServerThread) -> None:
    """A misspelt field ({"rateLimit": ...}) is 400 with Google's sentence naming it and where
    it is; the queue is not created (it used to be, at 500/s)."""
    name = f"{PARENT}/queues/typo-{uuid.uuid4().hex[:8]}"
    with _http(local_server) as http:
        body = {"name": name, "rateLimit": {"maxDispatchesPerSecond": 1}}
        refused = http.post(f"{PARENT}/queues", json=body)
        _bad_request(
            refused,
            "Invalid JSON payload received. Unknown name \"rateLimit\" at 'queue': "
            "Cannot find field.",
            "queue",
        )
        assert http.get(name).status_code == 404
        queue = _new_queue(http)
        task = {"task": {"httpRequest": {"uri": "http://127.0.0.1:9/x"}}}
        nested = http.post(f"{queue['name']}/tasks", json=task)
        _bad_request(
            nested,
            "Invalid JSON payload received. Unknown name \"uri\" at 'task.http_request': "
            "Cannot find field.",
            "task.http_request",
        )
        top = http.post(f"{queue['name']}/tasks", json={"tsk": {}})
        _bad_request(
            top, 'Invalid JSON payload received. Unknown name "tsk": Cannot find field.', None
        )


def test_bad_enum_values_and_types_are_refused(local_server: ServerThread) -> None:
    """An enum value that does not exist, in the query or the body, or a value of the wrong
    type: 400 'Invalid value at <field> (<type>), "<value>"'."""
    with _http(local_server) as http:
        queue = _new_queue(http)
        listed = http.get(f"{queue['name']}/tasks", params={"responseView": "BOGUS"})
        _bad_request(
            listed,
            "Invalid value at 'response_view' "
            '(type.googleapis.com/google.cloud.tasks.v2.Task.View), "BOGUS"',
            "response_view",
        )
        request = {"url": "http://127.0.0.1:9/x", "httpMethod": "FETCH"}
        method = http.post(f"{queue['name']}/tasks", json={"task": {"httpRequest": request}})
        _bad_request(
            method,
            "Invalid value at 'task.http_request.http_method' "
            '(type.googleapis.com/google.cloud.tasks.v2.HttpMethod), "FETCH"',
            "task.http_request.http_method",
        )
        rate = {"name": f"{PARENT}/queues/t-{uuid.uuid4().hex[:8]}",
                "rateLimits": {"maxDispatchesPerSecond": "fast"}}  # fmt: skip
        _bad_request(
            http.post(f"{PARENT}/queues", json=rate),
            "Invalid value at 'queue.rate_limits.max_dispatches_per_second' (TYPE_DOUBLE), "
            '"fast"',
            "queue.rate_limits.max_dispatches_per_second",
        )
        size = http.get(f"{PARENT}/queues", params={"page_size": "ten"})
        _bad_request(size, "Invalid value at 'page_size' (TYPE_INT32), \"ten\"", "page_size")


def test_unknown_query_parameter_is_refused(local_server: ServerThread) -> None:
    """A query parameter that is no field of the request: 400 'Cannot bind query parameter';
    Google's standard parameters are accepted on every method, with or without '$'."""
    with _http(local_server) as http:
        typo = http.get(f"{PARENT}/queues", params={"pageSise": "2"})
        _bad_request(
            typo,
            'Invalid JSON payload received. Unknown name "pageSise": Cannot bind query parameter.'
            " Field 'pageSise' could not be found in request message.",
            None,
        )
        standard = {"key": "k", "quotaUser": "u", "$.xgafv": "2", "callback": "cb",
                    "uploadType": "media", "upload_protocol": "raw", "access_token": "t",
                    "oauth_token": "t", "$prettyPrint": "false", "page_size": "3"}  # fmt: skip
        assert http.get(f"{PARENT}/queues", params=standard).status_code == 200


def test_default_values_are_omitted(local_server: ServerThread) -> None:
    """Answers follow the proto3 JSON mapping as Google serves it: no empty page token or
    list, no empty body in the BASIC view, no zero counts; whole-number doubles print as
    integers."""
    parent = f"projects/p/locations/empty-{uuid.uuid4().hex[:8]}"
    with _http(local_server) as http:
        assert http.get(f"{parent}/queues").json() == {}
        queue = _new_queue(http, parent)
        assert '"maxDispatchesPerSecond": 500,' in http.get(queue["name"]).text
        http.post(f"{queue['name']}:pause")
        assert http.get(f"{queue['name']}/tasks").json() == {}
        request = {"url": "http://127.0.0.1:9/x", "body": "aGk="}
        task = http.post(f"{queue['name']}/tasks", json={"task": {"httpRequest": request}}).json()
        listed = http.get(f"{queue['name']}/tasks").json()
    assert "body" not in task["httpRequest"]
    assert not {"dispatchCount", "responseCount", "firstAttempt", "lastAttempt"} & set(task)
    assert listed == {"tasks": [task]}
    assert task["view"] == "BASIC"


def test_locations(local_server: ServerThread) -> None:
    """GET projects/P/locations lists the locations holding the project's queues and the
    default us-central1; GET projects/P/locations/L answers any location."""
    project = f"p-{uuid.uuid4().hex[:8]}"
    with _http(local_server) as http:
        _new_queue(http, f"projects/{project}/locations/europe-west1")
        listed = http.get(f"projects/{project}/locations")
        one = http.get(f"projects/{project}/locations/asia-east1")
        paged = http.get(f"projects/{project}/locations", params={"pageSize": 1})
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "locations": [
            {
                "name": f"projects/{project}/locations/{i}",
                "locationId": i,
                "labels": {"cloud.googleapis.com/region": i},
            }
            for i in ("europe-west1", "us-central1")
        ]
    }
    assert one.json() == {
        "name": f"projects/{project}/locations/asia-east1",
        "locationId": "asia-east1",
        "labels": {"cloud.googleapis.com/region": "asia-east1"},
    }
    assert [loc["locationId"] for loc in paged.json()["locations"]] == ["europe-west1"]
    assert paged.json()["nextPageToken"]


def test_fields_selects_a_partial_response(local_server: ServerThread) -> None:
    """fields= cuts the answer to the named fields (a, b(c), d/e); a name that is no field
    of the response is 400."""
    with _http(local_server) as http:
        queue = _new_queue(http, f"projects/p/locations/f-{uuid.uuid4().hex[:8]}")
        got = http.get(queue["name"], params={"fields": "name,rateLimits(maxBurstSize)"})
        parent = queue["name"].rsplit("/queues/", 1)[0]
        listed = http.get(f"{parent}/queues", params={"fields": "queues/name,queues/state"})
        bogus = http.get(queue["name"], params={"fields": "name,rateLimit"})
    assert got.json() == {"name": queue["name"], "rateLimits": {"maxBurstSize": 100}}
    assert listed.json() == {"queues": [{"name": queue["name"], "state": "RUNNING"}]}
    assert bogus.status_code == 400
    assert bogus.json()["error"]["message"] == "Invalid field selection rateLimit"


def test_pretty_print_and_alt(local_server: ServerThread) -> None:
    """Answers are pretty-printed unless prettyPrint=false (the same JSON on one line);
    alt=proto answers the binary message; enum-encoding=int gives enum numbers."""
    with _http(local_server) as http:
        queue = _new_queue(http)
        pretty = http.get(queue["name"])
        compact = http.get(queue["name"], params={"prettyPrint": "false"})
        binary = http.get(queue["name"], params={"alt": "proto"})
        numbers = http.get(queue["name"], params={"$alt": "json;enum-encoding=int"})
        bad_alt = http.get(queue["name"], params={"alt": "xml"})
    assert pretty.text.startswith('{\n  "name"')
    assert "\n" not in compact.text
    assert compact.json() == pretty.json()
    assert binary.headers["content-type"] == "application/x-protobuf"
    assert Queue.deserialize(binary.content).name == queue["name"]
    assert numbers.json()["state"] == int(Queue.State.RUNNING)
    assert (bad_alt.status_code, bad_alt.json()["error"]["code"]) == (400, 400)


def test_unmatched_and_unimplemented_routes(local_server: ServerThread) -> None:
    """A method Google binds but this server lacks is 501 naming it and its verb; a method
    or path Google binds to nothing (PUT on a queue) is 404, as Google answers; the JSON
    code is always the HTTP status."""
    with _http(local_server) as http:
        queue = _new_queue(http)
        iam = http.post(f"{queue['name']}:getIamPolicy", json={})
        put = http.put(queue["name"], json={})
        verb = http.post(f"{queue['name']}:explode", json={})
    assert iam.status_code == 501
    assert iam.json()["error"]["code"] == 501
    assert ":getIamPolicy" in iam.json()["error"]["message"]
    assert "GetIamPolicy" in iam.json()["error"]["message"]
    for response in (put, verb):
        assert response.status_code == 404
        assert response.json()["error"] | {"message": ""} == {
            "code": 404, "message": "", "status": "NOT_FOUND"}  # fmt: skip


def test_too_large_body_is_400_with_code_400(local_server: ServerThread) -> None:
    """A body beyond the limit: HTTP 400 INVALID_ARGUMENT, code 400 in the JSON, with
    Google's sentence; nothing is created."""
    assert local_server.server is not None
    app = RestApp(local_server.server.runtime, max_body=64)
    name = f"{PARENT}/queues/big-{uuid.uuid4().hex[:8]}"

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rest") as client:
            body = {"name": name, "padding": "x" * 100}
            return await client.post(f"/v2/{PARENT}/queues", json=body)

    response = local_server.call(post())
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": 400,
        "message": "Request payload size exceeds the limit: 64 bytes.",
        "status": "INVALID_ARGUMENT",
    }
    with _http(local_server) as http:
        assert http.get(name).status_code == 404
