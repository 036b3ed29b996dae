"""The OpenAPI 3.1 document of the admin API, served at ``/openapi.json``."""

from __future__ import annotations

from typing import Any

from proxy._version import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR = _json(_ref("Error"), "A refusal: error code and a human sentence.")
_ERRORS = {
    "400": _ERROR,
    "401": _ERROR,
    "403": _ERROR,
    "404": _ERROR,
    "501": _ERROR,
    "503": _ERROR,
}
_QUEUE = {
    "name": "queue",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,100}$"},
}
_TASK = {
    "name": "task",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,500}$"},
}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
}
_CURSOR = {
    "name": "cursor",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "maxLength": 200},
}
_VIEW = {
    "name": "view",
    "in": "query",
    "required": False,
    "schema": {"type": "string", "enum": ["basic", "full"], "default": "basic"},
}
_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_NULLABLE_NUMBER = {"type": ["number", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_NULLABLE_STRING = {"type": ["string", "null"]}


def _op(
    summary: str, ok: dict[str, Any], *, params: list[Any], auth: bool = True
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "parameters": params,
        "responses": {"200": ok, **_ERRORS},
    }
    if auth:
        operation["security"] = _AUTH
    return operation


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
    },
    "Queue": {
        "type": "object",
        "required": ["name", "state", "target", "rate", "burst", "concurrency"],
        "properties": {
            "name": {"type": "string"},
            "state": {"type": "string", "enum": ["running", "paused", "disabled"]},
            "target": {"type": "string"},
            "rate": {"type": "number", "description": "configured dispatches per second"},
            "burst": {"type": "integer"},
            "concurrency": {"type": "integer"},
            "current_rate": {**_NULLABLE_NUMBER, "description": "after 429/503 slow-down"},
            "tasks": {**_NULLABLE_INT, "description": "waiting or in flight"},
            "in_flight": _NULLABLE_INT,
            "oldest_age": {**_NULLABLE_NUMBER, "description": "seconds"},
            "dead_letters": _NULLABLE_INT,
        },
    },
    "QueueList": {
        "type": "object",
        "required": ["queues"],
        "properties": {"queues": {"type": "array", "items": _ref("Queue")}},
    },
    "Task": {
        "type": "object",
        "required": ["id", "queue", "method", "path", "query", "created_at", "schedule_time"],
        "properties": {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "query": {"type": "string"},
            "created_at": {"type": "number", "description": "Unix seconds"},
            "schedule_time": {"type": "number", "description": "Unix seconds"},
            "dispatch_count": {"type": "integer"},
            "response_count": {"type": "integer"},
            "last_status": _NULLABLE_INT,
            "body_bytes": {"type": "integer"},
            "headers": {
                "type": ["array", "null"],
                "items": {"type": "array", "items": {"type": "string"}},
            },
            "body_base64": _NULLABLE_STRING,
        },
    },
    "TaskPage": {
        "type": "object",
        "required": ["tasks"],
        "properties": {
            "tasks": {"type": "array", "items": _ref("Task")},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "queue", "method", "path", "attempts", "failed_at"],
        "properties": {
            "id": {"type": "string"},
            "queue": {"type": "string"},
            "method": {"type": "string"},
            "path": {"type": "string"},
            "query": {"type": "string"},
            "created_at": {"type": "number"},
            "failed_at": {"type": "number"},
            "attempts": {"type": "integer"},
            "last_status": _NULLABLE_INT,
            "last_error": _NULLABLE_STRING,
            "response_snippet": _NULLABLE_STRING,
            "body_bytes": {"type": "integer"},
        },
    },
    "DeadLetterPage": {
        "type": "object",
        "required": ["dead_letters"],
        "properties": {
            "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "SpoolEntry": {
        "type": "object",
        "required": ["id", "name", "queue", "size", "received_at", "spooled_at"],
        "properties": {
            "id": {"type": "integer", "description": "arrival order"},
            "name": {"type": "string", "description": "the full Cloud Tasks task name"},
            "queue": {"type": "string"},
            "size": {"type": "integer", "description": "bytes of the CreateTask request"},
            "received_at": {"type": "number", "description": "Unix seconds"},
            "spooled_at": {"type": "number", "description": "Unix seconds"},
            "attempts": {"type": "integer", "description": "failed forwarding attempts"},
            "last_error": _NULLABLE_STRING,
        },
    },
    "SpoolPage": {
        "type": "object",
        "required": ["depth", "bytes", "oldest_age", "breaker", "tasks"],
        "properties": {
            "depth": {"type": "integer"},
            "bytes": {"type": "integer"},
            "oldest_age": {"type": "number", "description": "seconds"},
            "breaker": {"type": "string", "enum": ["closed", "half_open", "open"]},
            "tasks": {"type": "array", "items": _ref("SpoolEntry")},
            "next_cursor": _NULLABLE_STRING,
        },
    },
    "Count": {
        "type": "object",
        "properties": {
            "purged": _NULLABLE_INT,
            "replayed": {"type": "integer"},
            "deleted": {"type": "integer"},
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
        "additionalProperties": True,
    },
}


def admin_openapi() -> dict[str, Any]:
    """The admin API described as OpenAPI 3.1."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "ingest-proxy admin API",
            "version": __version__,
            "description": "Health, metrics, queues, tasks and dead letters. Everything "
            "but /healthz, /readyz, /metrics, /openapi.json and the queue overview needs "
            "`Authorization: Bearer <admin token>`.",
        },
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/healthz": {
                "get": _op(
                    "The process is alive.", _json(_ref("Status"), "alive"), params=[], auth=False
                )
            },
            "/readyz": {
                "get": _op(
                    "The engine can persist now.",
                    _json(_ref("Status"), "ready"),
                    params=[],
                    auth=False,
                )
            },
            "/metrics": {
                "get": _op(
                    "Prometheus metrics.",
                    {
                        "description": "text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    params=[],
                    auth=False,
                )
            },
            "/queues": {
                "get": _op(
                    "List queues.", _json(_ref("QueueList"), "queues"), params=[], auth=False
                )
            },
            "/queues/{queue}": {
                "get": _op(
                    "One queue.", _json(_ref("Queue"), "the queue"), params=[_QUEUE], auth=False
                )
            },
            "/queues/{queue}/pause": {
                "post": _op(
                    "Stop dispatching; tasks are still accepted.",
                    _json(_ref("Queue"), "paused"),
                    params=[_QUEUE],
                )
            },
            "/queues/{queue}/resume": {
                "post": _op("Dispatch again.", _json(_ref("Queue"), "running"), params=[_QUEUE])
            },
            "/queues/{queue}/purge": {
                "post": _op(
                    "Delete every task created before the call.",
                    _json(_ref("Count"), "purged"),
                    params=[_QUEUE],
                )
            },
            "/queues/{queue}/tasks": {
                "get": _op(
                    "List tasks in schedule order.",
                    _json(_ref("TaskPage"), "tasks"),
                    params=[_QUEUE, _LIMIT, _CURSOR, _VIEW],
                )
            },
            "/queues/{queue}/tasks/{task}": {
                "get": _op(
                    "One task, with headers and body.",
                    _json(_ref("Task"), "the task"),
                    params=[_QUEUE, _TASK],
                ),
                "delete": _op(
                    "Delete a task.", _json(_ref("Count"), "deleted"), params=[_QUEUE, _TASK]
                ),
            },
            "/queues/{queue}/dead-letters": {
                "get": _op(
                    "List dead letters, newest first.",
                    _json(_ref("DeadLetterPage"), "dead letters"),
                    params=[_QUEUE, _LIMIT, _CURSOR],
                )
            },
            "/queues/{queue}/dead-letters/replay": {
                "post": _op(
                    "Replay every dead letter.", _json(_ref("Count"), "replayed"), params=[_QUEUE]
                )
            },
            "/queues/{queue}/dead-letters/{task}/replay": {
                "post": _op(
                    "Replay one dead letter.",
                    _json(_ref("Count"), "replayed"),
                    params=[_QUEUE, _TASK],
                )
            },
            "/queues/{queue}/dead-letters/{task}": {
                "delete": _op(
                    "Drop one dead letter.", _json(_ref("Count"), "deleted"), params=[_QUEUE, _TASK]
                )
            },
            "/spool": {
                "get": _op(
                    "The Cloud Tasks engine's spool: requests waiting for Cloud Tasks, in"
                    " arrival order (404 without a spool).",
                    _json(_ref("SpoolPage"), "spooled requests"),
                    params=[_LIMIT, _CURSOR],
                )
            },
        },
    }
