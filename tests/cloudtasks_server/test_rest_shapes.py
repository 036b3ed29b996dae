"""The JSON shapes of queue-level routing, BatchCreateTasks and GetOperation on the REST
surface, seen without a client library (as curl sees them; field names as in the v2 REST
reference: ``httpTarget``, ``uriOverride``, ``tasks:batchCreate``, ``operations/ID``)."""

from __future__ import annotations

import uuid

import httpx

from tests.support.cloudtasks_server import ServerThread

PARENT = "projects/p/locations/rest-shapes"
METADATA = "type.googleapis.com/google.cloud.tasks.v2.BatchCreateTasksMetadata"
RESPONSE = "type.googleapis.com/google.cloud.tasks.v2.BatchCreateTasksResponse"


def test_http_target_json(local_server: ServerThread) -> None:
    """A queue created with an httpTarget in JSON answers it in the same shape (enum names,
    port as a string: int64), and PATCH ?updateMask=httpTarget with no target removes it."""
    base = f"http://{local_server.rest_host}/v2"
    queue = f"{PARENT}/queues/t-{uuid.uuid4().hex[:8]}"
    target = {
        "uriOverride": {
            "scheme": "HTTP",
            "host": "127.0.0.1",
            "port": "9",
            "pathOverride": {"path": "/q"},
            "queryOverride": {"queryParams": "a=1"},
            "uriOverrideEnforceMode": "IF_NOT_EXISTS",
        },
        "httpMethod": "PUT",
        "headerOverrides": [{"header": {"key": "X-Queue", "value": "yes"}}],
        "oidcToken": {"serviceAccountEmail": "sa@p.iam.gserviceaccount.com", "audience": "a"},
    }
    with httpx.Client(timeout=10) as http:
        created = http.post(f"{base}/{PARENT}/queues", json={"name": queue, "httpTarget": target})
        assert created.status_code == 200, created.text
        assert created.json()["httpTarget"] == target
        assert http.get(f"{base}/{queue}").json()["httpTarget"] == target
        cleared = http.patch(f"{base}/{queue}", params={"updateMask": "httpTarget"}, json={})
        assert cleared.status_code == 200, cleared.text
        assert "httpTarget" not in cleared.json()
        bad = {"name": f"{queue}-bad", "httpTarget": {"uriOverride": {"host": ""}}}
        refused = http.post(f"{base}/{PARENT}/queues", json=bad)
        assert refused.status_code == 400
        assert refused.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_batch_create_and_get_operation_json(local_server: ServerThread) -> None:
    """POST {queue}/tasks:batchCreate with {"requests": [...], "requestId"} answers a done
    Operation: its name under the location's operations, metadata and response as typed
    Any values (@type), failures by index; GET /v2/{operation name} answers the same."""
    base = f"http://{local_server.rest_host}/v2"
    queue = f"{PARENT}/queues/b-{uuid.uuid4().hex[:8]}"
    task = {"httpRequest": {"url": "http://127.0.0.1:9/x"}}
    body = {
        "requests": [
            {"parent": queue, "task": task},
            {"parent": queue, "task": {"httpRequest": {"url": "ftp://x"}}},
        ],
        "requestId": "rest-1",
    }
    with httpx.Client(timeout=10) as http:
        http.post(f"{base}/{PARENT}/queues", json={"name": queue})
        http.post(f"{base}/{queue}:pause")
        answer = http.post(f"{base}/{queue}/tasks:batchCreate", json=body)
        assert answer.status_code == 200, answer.text
        operation = answer.json()
        assert operation["name"].startswith(f"{PARENT}/operations/")
        assert operation["done"] is True
        metadata = operation["metadata"]
        assert metadata["@type"] == METADATA
        assert metadata["state"] == "PARTIALLY_SUCCEEDED"
        assert metadata["failedRequests"]["1"]["code"] == 3
        assert operation["response"]["@type"] == RESPONSE
        [created] = operation["response"]["tasks"]
        assert created["name"].startswith(f"{queue}/tasks/")
        got = http.get(f"{base}/{operation['name']}")
        assert got.status_code == 200
        assert got.json() == operation
        missing = http.get(f"{base}/{PARENT}/operations/nope")
        assert (missing.status_code, missing.json()["error"]["status"]) == (404, "NOT_FOUND")
        empty = http.post(f"{base}/{queue}/tasks:batchCreate", json={"requests": []})
        assert (empty.status_code, empty.json()["error"]["status"]) == (400, "INVALID_ARGUMENT")
