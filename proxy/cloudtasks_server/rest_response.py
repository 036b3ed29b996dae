"""A REST call's answer as Google serves it: the proto3 JSON mapping without default-valued
fields (no ``"nextPageToken": ""``, no ``"dispatchCount": 0``), enum names unless the
client asks for numbers, whole-number doubles as integers (``500``), pretty-printed unless
``prettyPrint=false``, cut to the ``fields`` selector (partial response), or the binary
message for ``alt=proto``. Errors are ``{"error": {"code", "message", "status",
"details"?}}`` with ``code`` the HTTP status (a ``google.rpc.Status`` for ``alt=proto``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, cast

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from proxy.cloudtasks_server.rest_request import BadRequestError, SystemParameters

# google.rpc.Code -> HTTP status, as google/rpc/code.proto documents.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
JSON = b"application/json; charset=UTF-8"
PROTO = b"application/x-protobuf"
_NAME_RE = re.compile(r"\s*([A-Za-z0-9_*]+(?:/[A-Za-z0-9_*]+)*)\s*")
_UNTYPED = ("google.protobuf.Any", "google.protobuf.Struct", "google.protobuf.Value")
# Typed aliases of untyped protobuf helpers.
_to_dict: Callable[..., dict[str, Any]] = json_format.MessageToDict
_parse_dict: Callable[..., Any] = json_format.ParseDict


def _serialize(message: Message) -> bytes:
    data: bytes = message.SerializeToString()  # type: ignore[no-untyped-call]
    return data


Selection = dict[str, Any]  # field name -> its sub-selection, None for all of it


def pb(message: Any) -> Message:
    """The protobuf message of a proto-plus message (or the protobuf message itself)."""
    return type(message).pb(message) if hasattr(type(message), "pb") else message  # type: ignore[no-any-return]


def render(message: Any | None, params: SystemParameters) -> tuple[bytes, bytes]:
    """The body and content type answering ``message`` (``None``: google.protobuf.Empty)."""
    raw = pb(message) if message is not None else None
    if params.alt == "proto":
        return (_serialize(raw) if raw is not None else b""), PROTO
    data: Any = {}
    if raw is not None:
        data = _whole_numbers(_to_dict(raw, use_integers_for_enums=params.enums_as_numbers))
        if params.fields is not None:
            selection = parse_selection(params.fields)
            descriptor = cast(Descriptor, raw.DESCRIPTOR)
            _check_selection(selection, descriptor)
            data = _select(data, selection, descriptor)
    return _dump(data, params.pretty), JSON


def render_error(
    exc: Exception, code: grpc.StatusCode, message: str, params: SystemParameters
) -> tuple[int, bytes, bytes]:
    """HTTP status, body and content type of a refusal."""
    status = HTTP_STATUS.get(code, 500)
    details = exc.details() if isinstance(exc, BadRequestError) else []
    if params.alt == "proto":
        rpc = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            fields = {k: v for k, v in detail.items() if k != "@type"}
            rpc.details.add().Pack(_parse_dict(fields, error_details_pb2.BadRequest()))
        return status, _serialize(rpc), PROTO
    error: dict[str, Any] = {"code": status, "message": message, "status": code.name}
    if details:
        error["details"] = details
    return status, _dump({"error": error}, params.pretty), JSON


def _dump(data: Any, pretty: bool) -> bytes:
    if pretty:
        return json.dumps(data, indent=2, ensure_ascii=False).encode() + b"\n"
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def _whole_numbers(value: Any) -> Any:
    """Doubles that are whole numbers as integers, as Google prints them (``500``)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers(v) for v in value]
    return value


def parse_selection(text: str) -> Selection:
    """A ``fields`` selector (``name,rateLimits(maxBurstSize),queues/name``) as a tree;
    a malformed one is a :class:`BadRequestError`."""
    selection, end = _parse_list(text, 0)
    if end != len(text):
        raise BadRequestError(
            f"Invalid field selection {text!r}: unexpected {text[end]!r}.", "fields"
        )
    return selection


def _parse_list(text: str, pos: int) -> tuple[Selection, int]:
    selection: Selection = {}
    while True:
        found = _NAME_RE.match(text, pos)
        if found is None:
            raise BadRequestError(
                f"Invalid field selection {text!r}: a field name is missing.", "fields"
            )
        names, pos = found.group(1).split("/"), found.end()
        sub: Selection | None = None
        if text.startswith("(", pos):
            sub, pos = _parse_list(text, pos + 1)
            if not text.startswith(")", pos):
                raise BadRequestError(
                    f"Invalid field selection {text!r}: ')' is missing.", "fields"
                )
            pos += 1
            while text[pos : pos + 1].isspace():
                pos += 1
        for name in reversed(names[1:]):
            sub = {name: sub}
        _merge(selection, names[0], sub)
        if not text.startswith(",", pos):
            return selection, pos
        pos += 1


def _merge(selection: Selection, name: str, sub: Selection | None) -> None:
    if name in selection and (selection[name] is None or sub is None):
        selection[name] = None
    elif name in selection:
        for key, value in sub.items():  # type: ignore[union-attr]
            _merge(selection[name], key, value)
    else:
        selection[name] = sub


def _field(message: Descriptor, name: str) -> Any:
    by_json = {f.json_name: f for f in message.fields}
    return by_json.get(name) or message.fields_by_name.get(name)


def _check_selection(selection: Selection, message: Descriptor) -> None:
    """Every selected name is a field of the response message."""
    for name, sub in selection.items():
        if name == "*":
            continue
        field = _field(message, name)
        if field is None:
            raise BadRequestError(f"Invalid field selection {name}", "fields")
        inner = field.message_type
        if sub is None or (inner is not None and inner.full_name in _UNTYPED):
            continue
        if inner is None or inner.GetOptions().map_entry:
            if inner is None:
                raise BadRequestError(
                    f"Invalid field selection {name}: it has no fields.", "fields"
                )
            continue
        _check_selection(sub, inner)


def _select(
    data: dict[str, Any], selection: Selection, message: Descriptor | None
) -> dict[str, Any]:
    if "*" in selection:
        return data
    out: dict[str, Any] = {}
    for name, sub in selection.items():
        field = _field(message, name) if message is not None else None
        key = field.json_name if field is not None else name
        if key not in data:
            continue
        value = data[key]
        inner = field.message_type if field is not None else None
        typed = inner if inner is not None and inner.full_name not in _UNTYPED else None
        if typed is not None and typed.GetOptions().map_entry:
            typed = None  # map keys are selected as they are
        if sub is None:
            out[key] = value
        elif isinstance(value, list):
            out[key] = [_select(v, sub, typed) if isinstance(v, dict) else v for v in value]
        elif isinstance(value, dict):
            out[key] = _select(value, sub, typed)
    return out
