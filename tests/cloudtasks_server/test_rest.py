"""The REST (JSON) surface seen without a client library (as curl or gcloud see it)."""

from __future__ import annotations

import uuid

import httpx

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
