"""The REST (JSON) surface of the local Cloud Tasks: the ``/v2/...`` HTTP bindings of
CloudTasks and its Locations mixin (``rest_routes.py``), on the same RPC handlers as gRPC,
as a plain ASGI app (served by uvicorn; no web framework).

Requests are transcoded as Google's front end does (``rest_request.py``: strict about
unknown names, either form of a field mask) and answered as it does (``rest_response.py``:
the proto3 JSON mapping without defaults, ``fields``, ``prettyPrint``, ``alt``). Errors are
``{"error": {"code": <http>, "message": ..., "status": "<GRPC_CODE>", "details"?}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import uvicorn
from google.cloud import tasks_v2 as t
from google.cloud.location import locations_pb2 as loc  # type: ignore[import-untyped]
from google.longrunning import operations_pb2

from proxy.cloudtasks_server.locations import LocationApi
from proxy.cloudtasks_server.operations import OperationApi
from proxy.cloudtasks_server.queue_api import QueueApi
from proxy.cloudtasks_server.rest_request import (
    SystemParameters,
    build_request,
    system_parameters,
)
from proxy.cloudtasks_server.rest_response import JSON, render, render_error
from proxy.cloudtasks_server.rest_routes import route
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.task_api import TaskApi
from proxy.cloudtasks_server.validation import ApiError, invalid
from proxy.errors import EngineUnavailableError

logger = logging.getLogger("ingest_proxy.cloudtasks_server")

MAX_BODY = 64 * 1024 * 1024  # bytes of a request body
Rpc = tuple[Callable[[Any], Awaitable[Any]], Any]  # handler, request type


class RestApp:
    """ASGI app serving the CloudTasks REST routes on ``runtime``; a request body beyond
    ``max_body`` bytes is refused."""

    def __init__(self, runtime: Runtime, *, max_body: int = MAX_BODY) -> None:
        self.rt = runtime
        self.max_body = max_body
        q, k, where = QueueApi(runtime), TaskApi(runtime), LocationApi(runtime)
        operations = OperationApi(runtime)
        self.rpcs: dict[str, Rpc] = {
            "ListQueues": (q.list_queues, t.ListQueuesRequest),
            "CreateQueue": (q.create_queue, t.CreateQueueRequest),
            "GetQueue": (q.get_queue, t.GetQueueRequest),
            "UpdateQueue": (q.update_queue, t.UpdateQueueRequest),
            "DeleteQueue": (q.delete_queue, t.DeleteQueueRequest),
            "PauseQueue": (q.pause_queue, t.PauseQueueRequest),
            "ResumeQueue": (q.resume_queue, t.ResumeQueueRequest),
            "PurgeQueue": (q.purge_queue, t.PurgeQueueRequest),
            "ListTasks": (k.list_tasks, t.ListTasksRequest),
            "CreateTask": (k.create_task, t.CreateTaskRequest),
            "BatchCreateTasks": (k.batch_create_tasks, t.BatchCreateTasksRequest),
            "GetTask": (k.get_task, t.GetTaskRequest),
            "DeleteTask": (k.delete_task, t.DeleteTaskRequest),
            "RunTask": (k.run_task, t.RunTaskRequest),
            "ListLocations": (where.list_locations, loc.ListLocationsRequest),
            "GetLocation": (where.get_location, loc.GetLocationRequest),
            "GetOperation": (operations.get_operation, operations_pb2.GetOperationRequest),
        }
        self._implemented = frozenset(self.rpcs)

    async def handle(self, method: str, path: str, query: str, body: bytes) -> Any:
        """Run one REST call on the raw ``path`` and ``query``; return the response
        message (``None``: empty)."""
        binding, variables = route(method, path, self._implemented)
        handler, request_type = self.rpcs[binding.rpc]
        return await handler(build_request(request_type, variables, binding.body, body, query))

    def _keys(self, path: str, scope: Any) -> dict[str, Any] | None:
        """The discovery document and public keys of the server's token signer, for the
        paths that serve them (``None`` for any other path; ``{}`` when unsigned)."""
        if path not in _KEY_PATHS:
            return None
        signer = self.rt.signer
        if signer is None:
            return {}
        if path == "/oauth2/v3/certs":
            return signer.jwks()
        if path == "/oauth2/v1/certs":
            return dict(signer.certs())
        host, port = scope.get("server") or ("127.0.0.1", 0)
        return signer.openid_configuration(f"http://{host}:{port}")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        query = scope["query_string"].decode("latin-1")
        params = SystemParameters()
        try:
            params = system_parameters(query)
            body = await _read_body(receive, self.max_body)
            keys = self._keys(path, scope)
            if keys is not None:
                await _send(send, 200 if keys else 404, json.dumps(keys).encode(), JSON)
                return
            response = await self.handle(scope["method"], path, query, body)
        except ApiError as exc:
            await _send(send, *render_error(exc, exc.code, exc.message, params))
            return
        except EngineUnavailableError as exc:
            await _send(send, *render_error(exc, grpc.StatusCode.UNAVAILABLE, str(exc), params))
            return
        except Exception as exc:
            logger.exception("REST %s %s failed", scope["method"], path)
            code = grpc.StatusCode.INTERNAL
            await _send(send, *render_error(exc, code, "The call failed.", params))
            return
        try:
            text, content_type = render(response, params)
        except ApiError as exc:  # a fields selector naming no field
            await _send(send, *render_error(exc, exc.code, exc.message, params))
            return
        await _send(send, 200, text, content_type)


async def _read_body(receive: Any, limit: int) -> bytes:
    """The request body; INVALID_ARGUMENT beyond ``limit`` bytes, as Google answers."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if len(body) > limit:
            raise invalid(f"Request payload size exceeds the limit: {limit} bytes.")
        if not message.get("more_body"):
            return body


_KEY_PATHS = frozenset(
    {"/.well-known/openid-configuration", "/oauth2/v3/certs", "/oauth2/v1/certs"}
)


async def _send(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the command owns the signals
        return

    def capture_signals(self) -> Any:  # uvicorn >= 0.29
        return contextlib.nullcontext()


class RestServer:
    """The REST app on ``host:port`` (0: a free port, see :attr:`port`) under uvicorn."""

    def __init__(self, runtime: Runtime, host: str, port: int) -> None:
        self.app = RestApp(runtime)
        self.host = host
        self.port = port
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve in a task of the running loop."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app, lifespan="off", log_level="warning", access_log=False, log_config=None
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        for _ in range(500):
            if self._server.started or self._task.done():
                break
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()

    async def stop(self) -> None:
        """Stop serving."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
