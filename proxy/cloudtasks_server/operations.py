"""Long-running operations (``google.longrunning``): what BatchCreateTasks returns, and the
Operations service's GetOperation that reads one back.

Operations are named ``projects/P/locations/L/operations/ID``. A BatchCreateTasks with a
``request_id`` always gets the same ID (so a retried call finds the first call's
operation instead of creating its tasks again); without one the ID is a random UUID, as
the API documents. This server runs the batch before it answers, so every operation it
returns is ``done``; it keeps them for ``runtime.OPERATION_RETENTION``.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import uuid
from typing import Any

import grpc
from google.cloud.tasks_v2 import BatchCreateTasksMetadata, BatchCreateTasksResponse, Task
from google.longrunning import operations_pb2
from google.protobuf import any_pb2
from google.rpc import status_pb2

from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.validation import ApiError, QueueName, invalid, not_found

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
State = BatchCreateTasksMetadata.State
# Typed aliases of generated protobuf classes mypy cannot see into.
Operation: Any = operations_pb2.Operation
_AnyMessage: Any = any_pb2.Any  # type: ignore[attr-defined]  # generated at import


def encode(operation: Any) -> bytes:
    """An Operation as stored."""
    return bytes(operation.SerializeToString())


def decode(body: bytes) -> Any:
    """A stored Operation."""
    return Operation.FromString(body)


def operation_name(queue: QueueName, request_id: str) -> str:
    """The name of a BatchCreateTasks operation on ``queue``: derived from ``request_id``
    (a hash of the queue and the id), or random when it is empty."""
    if request_id:
        digest = hashlib.sha256(f"{queue.path}\n{request_id}".encode()).hexdigest()[:32]
    else:
        digest = uuid.uuid4().hex
    return f"{queue.parent}/operations/{digest}"


def _packed(message: BatchCreateTasksMetadata | BatchCreateTasksResponse) -> Any:
    packed = _AnyMessage()
    packed.Pack(type(message).pb(message))
    return packed


def batch_done(name: str, at: float, created: list[Task], failed: dict[int, ApiError]) -> Any:
    """The finished operation (``google.longrunning.Operation``) of a BatchCreateTasks
    run at ``at`` (Unix seconds): ``created`` the tasks made, ``failed`` the refusals by
    index in the request. When none of the requests succeeded the operation carries an
    ABORTED error instead of a response
    (as the API documents for BatchDeleteTasks; BatchCreateTasks documents nothing)."""
    stamp = datetime.datetime.fromtimestamp(at, tz=datetime.UTC)
    state = State.PARTIALLY_SUCCEEDED if failed else State.SUCCEEDED
    metadata = BatchCreateTasksMetadata(start_time=stamp, end_time=stamp, state=state)
    for index, error in failed.items():
        metadata.failed_requests[index] = status_pb2.Status(
            code=error.code.value[0], message=error.message
        )
    operation = Operation(name=name, done=True, metadata=_packed(metadata))
    if failed and not created:
        operation.error.code = grpc.StatusCode.ABORTED.value[0]
        operation.error.message = (
            "None of the requests succeeded; see BatchCreateTasksMetadata.failed_requests."
        )
    else:
        operation.response.CopyFrom(_packed(BatchCreateTasksResponse(tasks=created)))
    return operation


def parse_operation_name(name: str) -> str:
    """Check ``projects/P/locations/L/operations/ID``; return it. INVALID_ARGUMENT
    otherwise."""
    location, sep, op_id = name.rpartition("/operations/")
    if not sep or not _ID_RE.match(op_id):
        raise invalid(f"Invalid operation name {name!r}: expected <location>/operations/ID.")
    v.parse_parent(location)
    return name


class OperationApi:
    """The Operations service on ``runtime`` (GetOperation only)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def get_operation(self, request: Any) -> Any:
        """The operation named in ``request`` (a GetOperationRequest); NOT_FOUND when
        there is none (or it is older than the retention)."""
        body = await self.rt.server_store.operation(parse_operation_name(request.name))
        if body is None:
            raise not_found(f"Operation {request.name} does not exist.")
        return decode(body)
