"""The REST (JSON) surface of the local Cloud Tasks: the ``/v2/...`` routes of the
CloudTasks HTTP bindings, on the same RPC handlers as gRPC, as a plain ASGI app (served by
uvicorn; no web framework).

Besides the CloudTasks routes, ``GET /v2/projects/P/locations/L/operations/ID`` is the
Operations service's GetOperation (how the clients poll BatchCreateTasks).

Requests are transcoded as Google's HTTP bindings say: path variables, the JSON body (the
whole request, or the ``queue`` field for CreateQueue/UpdateQueue), and the other fields
as query parameters (``pageSize``, ``responseView``, ``updateMask``, ...). Errors are
``{"error": {"code": <http>, "message": ..., "status": "<GRPC_CODE>"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, unquote

import grpc
import uvicorn
from google.cloud import tasks_v2 as t
from google.longrunning import operations_pb2
from google.protobuf import json_format
from google.protobuf import message as pb_message

from proxy.cloudtasks_server.operations import OperationApi
from proxy.cloudtasks_server.queue_api import QueueApi
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.task_api import TaskApi
from proxy.cloudtasks_server.validation import ApiError
from proxy.errors import EngineUnavailableError

logger = logging.getLogger("ingest_proxy.cloudtasks_server")

MAX_BODY = 64 * 1024 * 1024
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}
# Typed aliases of untyped protobuf helpers.
_parse_dict: Callable[..., Any] = json_format.ParseDict
_to_json: Callable[..., str] = json_format.MessageToJson
Route = tuple[Callable[[Any], Awaitable[Any]], Any, str | None]  # handler, request type, body


class RestApp:
    """ASGI app serving the CloudTasks REST routes on ``runtime``."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.queues = QueueApi(runtime)
        self.tasks = TaskApi(runtime)
        self.operations = OperationApi(runtime)

    def _route(self, method: str, segments: list[str], verb: str) -> tuple[Route, dict[str, str]]:
        """The handler for ``method`` on ``segments`` (path after /v2/) and the path field."""
        shapes = {5: "queues", 6: "queue", 7: "tasks", 8: "task"}
        expected = ["projects", "", "locations", "", "queues", "", "tasks", ""]
        if len(segments) == 6 and segments[4] == "operations" and method == "GET" and not verb:
            get = self.operations.get_operation
            return (get, _GetOperationRequest, None), {"name": "/".join(segments)}
        shape = shapes.get(len(segments), "")
        if not shape or any(e and e != s for e, s in zip(expected, segments, strict=False)):
            raise ApiError(grpc.StatusCode.NOT_FOUND, "No such REST route.")
        q, k = self.queues, self.tasks
        routes: dict[tuple[str, str], tuple[Route, str]] = {
            ("GET", "queues"): ((q.list_queues, t.ListQueuesRequest, None), "parent"),
            ("POST", "queues"): ((q.create_queue, t.CreateQueueRequest, "queue"), "parent"),
            ("GET", "queue"): ((q.get_queue, t.GetQueueRequest, None), "name"),
            ("DELETE", "queue"): ((q.delete_queue, t.DeleteQueueRequest, None), "name"),
            ("PATCH", "queue"): ((q.update_queue, t.UpdateQueueRequest, "queue"), "queue.name"),
            ("POST", "queue:pause"): ((q.pause_queue, t.PauseQueueRequest, "*"), "name"),
            ("POST", "queue:resume"): ((q.resume_queue, t.ResumeQueueRequest, "*"), "name"),
            ("POST", "queue:purge"): ((q.purge_queue, t.PurgeQueueRequest, "*"), "name"),
            ("GET", "tasks"): ((k.list_tasks, t.ListTasksRequest, None), "parent"),
            ("POST", "tasks"): ((k.create_task, t.CreateTaskRequest, "*"), "parent"),
            ("POST", "tasks:batchCreate"): (
                (k.batch_create_tasks, t.BatchCreateTasksRequest, "*"),
                "parent",
            ),
            ("GET", "task"): ((k.get_task, t.GetTaskRequest, None), "name"),
            ("DELETE", "task"): ((k.delete_task, t.DeleteTaskRequest, None), "name"),
            ("POST", "task:run"): ((k.run_task, t.RunTaskRequest, "*"), "name"),
        }
        found = routes.get((method, f"{shape}:{verb}" if verb else shape))
        path = "/".join(segments)
        if shape in ("queues", "tasks"):  # a collection: the field is its parent
            path = "/".join(segments[:-1])
        if found is None:
            raise ApiError(grpc.StatusCode.UNIMPLEMENTED, f"{method} /v2/{path} is not supported.")
        route, field = found
        return route, {field: path}

    async def handle(self, method: str, raw_path: str, query: str, body: bytes) -> Any:
        """Run one REST call; return the response message (``None``: empty)."""
        if not raw_path.startswith("/v2/"):
            raise ApiError(grpc.StatusCode.NOT_FOUND, "No such REST route.")
        rest, _, verb = raw_path[len("/v2/") :].partition(":")
        segments = [unquote(s) for s in rest.split("/")]
        (handler, request_type, body_field), fields = self._route(method, segments, verb)
        data: dict[str, Any] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if not name.startswith("$"):
                data[name] = value
        if body:
            try:
                payload = json.loads(body)
            except ValueError:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "The body is not JSON.") from None
            if body_field == "*":
                if not isinstance(payload, dict):
                    raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "The body must be an object.")
                data.update(payload)
            elif body_field is not None:
                data[body_field] = payload
        for field, value in fields.items():
            if "." in field:
                outer, inner = field.split(".")
                data.setdefault(outer, {})
                if isinstance(data[outer], dict):
                    data[outer][inner] = value
            else:
                data[field] = value
        request = request_type()
        message = request if isinstance(request, pb_message.Message) else request_type.pb(request)
        try:
            _parse_dict(data, message, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Bad request: {exc}") from None
        return await handler(request)

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
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > MAX_BODY:
                await _send(send, 413, _error(grpc.StatusCode.INVALID_ARGUMENT, "Too large."))
                return
            if not message.get("more_body"):
                break
        path = scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0]
        query = scope["query_string"].decode("latin-1")
        keys = self._keys(path, scope)
        if keys is not None:
            await _send(send, 200 if keys else 404, json.dumps(keys).encode())
            return
        try:
            response = await self.handle(scope["method"], path, query, body)
        except ApiError as exc:
            await _send(send, HTTP_STATUS.get(exc.code, 400), _error(exc.code, exc.message))
            return
        except EngineUnavailableError as exc:
            await _send(send, 503, _error(grpc.StatusCode.UNAVAILABLE, str(exc)))
            return
        except Exception:
            logger.exception("REST %s %s failed", scope["method"], path)
            await _send(send, 500, _error(grpc.StatusCode.INTERNAL, "The call failed."))
            return
        # Enum names, as Google's REST API answers, unless the client asks for numbers
        # ($alt=json;enum-encoding=int, as the client libraries do).
        numbers = "enum-encoding=int" in unquote(query)
        if response is None:
            text = "{}"
        elif isinstance(response, pb_message.Message):  # google.longrunning.Operation
            text = _to_json(response, use_integers_for_enums=numbers)
        else:
            text = type(response).to_json(response, use_integers_for_enums=numbers)
        await _send(send, 200, text.encode())


_GetOperationRequest: Any = operations_pb2.GetOperationRequest
_KEY_PATHS = frozenset(
    {"/.well-known/openid-configuration", "/oauth2/v3/certs", "/oauth2/v1/certs"}
)


def _error(code: grpc.StatusCode, message: str) -> bytes:
    status = HTTP_STATUS.get(code, 400)
    return json.dumps({"error": {"code": status, "message": message, "status": code.name}}).encode()


async def _send(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
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
