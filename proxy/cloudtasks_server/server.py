"""The gRPC server: ``google.cloud.tasks.v2.CloudTasks`` on ``grpc.aio``, with the message
classes google-cloud-tasks ships (``.deserialize``/``.serialize``; no generated code).

Errors: an :class:`ApiError` becomes its status code; anything unexpected is logged and
answered INTERNAL (never UNKNOWN); a store that cannot write is UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.cloud import tasks_v2
from google.cloud.location import locations_pb2  # type: ignore[import-untyped]
from google.longrunning import operations_pb2

from proxy.cloudtasks_server.locations import LocationApi
from proxy.cloudtasks_server.operations import OperationApi, encode
from proxy.cloudtasks_server.queue_api import QueueApi
from proxy.cloudtasks_server.rest import RestServer
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.task_api import TaskApi
from proxy.cloudtasks_server.validation import ApiError
from proxy.errors import EngineUnavailableError

logger = logging.getLogger("ingest_proxy.cloudtasks_server")

SERVICE = "google.cloud.tasks.v2.CloudTasks"
LOCATIONS_SERVICE = "google.cloud.location.Locations"
OPERATIONS_SERVICE = "google.longrunning.Operations"
Handler = Callable[[Any], Awaitable[Any]]


class _Empty:
    """Serializer of google.protobuf.Empty answers."""

    @staticmethod
    def serialize(_: object) -> bytes:
        return b""  # an empty message


class _Operation:
    """(De)serializers of the google.longrunning messages (plain protobuf classes)."""

    serialize = staticmethod(encode)
    deserialize = operations_pb2.GetOperationRequest.FromString


def _methods(queues: QueueApi, tasks: TaskApi) -> dict[str, tuple[Handler, Any, Any]]:
    t = tasks_v2
    return {
        "CreateQueue": (queues.create_queue, t.CreateQueueRequest, t.Queue),
        "GetQueue": (queues.get_queue, t.GetQueueRequest, t.Queue),
        "ListQueues": (queues.list_queues, t.ListQueuesRequest, t.ListQueuesResponse),
        "UpdateQueue": (queues.update_queue, t.UpdateQueueRequest, t.Queue),
        "DeleteQueue": (queues.delete_queue, t.DeleteQueueRequest, _Empty),
        "PauseQueue": (queues.pause_queue, t.PauseQueueRequest, t.Queue),
        "ResumeQueue": (queues.resume_queue, t.ResumeQueueRequest, t.Queue),
        "PurgeQueue": (queues.purge_queue, t.PurgeQueueRequest, t.Queue),
        "CreateTask": (tasks.create_task, t.CreateTaskRequest, t.Task),
        "BatchCreateTasks": (tasks.batch_create_tasks, t.BatchCreateTasksRequest, _Operation),
        "GetTask": (tasks.get_task, t.GetTaskRequest, t.Task),
        "ListTasks": (tasks.list_tasks, t.ListTasksRequest, t.ListTasksResponse),
        "DeleteTask": (tasks.delete_task, t.DeleteTaskRequest, _Empty),
        "RunTask": (tasks.run_task, t.RunTaskRequest, t.Task),
    }


def _wrap(name: str, handler: Handler) -> Callable[[Any, Any], Awaitable[Any]]:
    async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            return await handler(request)
        except ApiError as exc:
            await context.abort(exc.code, exc.message)
        except EngineUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception:
            logger.exception("%s failed", name)
            await context.abort(grpc.StatusCode.INTERNAL, f"{name} failed inside the server.")

    return call


def _service(name: str, methods: dict[str, tuple[Handler, Any, Any]]) -> grpc.GenericRpcHandler:
    """The unary methods of service ``name``: handler, request parser, response serializer."""
    return grpc.method_handlers_generic_handler(
        name,
        {
            method: grpc.unary_unary_rpc_method_handler(
                _wrap(method, fn), request_deserializer=parse, response_serializer=serialize
            )
            for method, (fn, parse, serialize) in methods.items()
        },
    )


def handler(runtime: Runtime) -> grpc.GenericRpcHandler:
    """The CloudTasks service on ``runtime``; unimplemented methods (IAM, CMEK, Buffer,
    BatchDeleteTasks) answer UNIMPLEMENTED, as grpc does for unknown methods."""
    queues, tasks = QueueApi(runtime), TaskApi(runtime)
    return _service(
        SERVICE,
        {
            name: (fn, request_type.deserialize, response_type.serialize)
            for name, (fn, request_type, response_type) in _methods(queues, tasks).items()
        },
    )


def locations_handler(runtime: Runtime) -> grpc.GenericRpcHandler:
    """The Locations mixin (ListLocations, GetLocation) that Google's clients offer."""
    api, loc = LocationApi(runtime), locations_pb2
    return _service(
        LOCATIONS_SERVICE,
        {
            "ListLocations": (
                api.list_locations,
                loc.ListLocationsRequest.FromString,
                loc.ListLocationsResponse.SerializeToString,
            ),
            "GetLocation": (
                api.get_location,
                loc.GetLocationRequest.FromString,
                loc.Location.SerializeToString,
            ),
        },
    )


def operations_handler(runtime: Runtime) -> grpc.GenericRpcHandler:
    """The google.longrunning.Operations service the clients poll BatchCreateTasks with:
    GetOperation (the other methods answer UNIMPLEMENTED)."""
    get = OperationApi(runtime).get_operation
    return _service(
        OPERATIONS_SERVICE, {"GetOperation": (get, _Operation.deserialize, _Operation.serialize)}
    )


class LocalCloudTasks:
    """A running server: :meth:`start` binds ``host:port`` (port 0: a free one, see
    :attr:`port`), :meth:`stop` drains and closes the file. Runtime arguments (clock,
    transport, max_task_bytes, ...) are passed to :class:`Runtime`."""

    def __init__(
        self,
        db: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rest_port: int | None = None,
        **runtime: Any,
    ):
        self.runtime = Runtime(db, **runtime)
        self.host = host
        self.port = port
        self.rest: RestServer | None = None
        self._rest_port = rest_port
        self._server: grpc.aio.Server | None = None

    @property
    def address(self) -> str:
        """``host:port`` to point clients at."""
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        """Open the store, then serve."""
        await self.runtime.start()
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)])
        server.add_generic_rpc_handlers(
            (
                handler(self.runtime),
                locations_handler(self.runtime),
                operations_handler(self.runtime),
            )
        )
        try:
            self.port = server.add_insecure_port(f"{self.host}:{self.port}")
            await server.start()
            if self._rest_port is not None:
                self.rest = RestServer(self.runtime, self.host, self._rest_port)
                await self.rest.start()
                if self.runtime.signer is not None:  # tokens name where their keys are
                    self.runtime.signer.issuer = f"http://{self.host}:{self.rest.port}"
        except BaseException:
            await server.stop(0)
            await self.runtime.aclose()
            raise
        self._server = server

    async def stop(self, grace: float = 1.0) -> None:
        """Stop answering (calls in flight get ``grace`` seconds), then the runtime."""
        if self.rest is not None:
            await self.rest.stop()
            self.rest = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        await self.runtime.aclose()


async def serve_cloudtasks(
    db: str,
    host: str,
    port: int,
    max_task_bytes: int,
    rest_port: int | None = None,
    *,
    signing_key: str | None = None,
    unsigned_tokens: bool = False,
) -> int:
    """Run until SIGINT/SIGTERM (the ``cloudtasks-server`` command); returns the exit code.
    ``rest_port`` also serves the REST (JSON) surface there, with the token signer's
    discovery document and keys (``signing.py``)."""
    server = LocalCloudTasks(
        db,
        host=host,
        port=port,
        max_task_bytes=max_task_bytes,
        rest_port=rest_port,
        signing_key=signing_key,
        unsigned_tokens=unsigned_tokens,
    )
    try:
        await server.start()
    except (EngineUnavailableError, RuntimeError, OSError) as exc:
        logger.error("cannot start: %s", exc)
        return 1
    logger.info(
        "local Cloud Tasks (google.cloud.tasks.v2) on %s, tasks in %s; tasks are delivered to"
        " their own URLs (a development tool: keep it on 127.0.0.1)",
        server.address,
        db,
    )
    if server.rest is not None:
        logger.info("REST (JSON) surface on http://%s:%d/v2/", host, server.rest.port)
    if server.runtime.signer is not None:
        logger.info(
            "OIDC tokens are signed by %s (issuer %s)",
            server.runtime.signing_key,
            server.runtime.signer.issuer,
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logger.info("stopping")
    await server.stop()
    return 0
