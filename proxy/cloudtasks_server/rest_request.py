"""A REST call's request message, built as Google's front end builds it (gRPC transcoding):
path variables, the JSON body (the whole request or one field of it), and query parameters
for the other fields, by JSON name (``pageSize``) or proto name (``page_size``).

Strict, as Google is: an unknown JSON name, an unknown query parameter, an enum value that
does not exist or a value of the wrong type is INVALID_ARGUMENT with Google's sentence and a
``google.rpc.BadRequest`` detail. A field mask is taken in either form,
``rate_limits.max_dispatches_per_second`` or ``rateLimits.maxDispatchesPerSecond``. The
system parameters (``fields``, ``prettyPrint``, ``alt``, ...) are read into
:class:`SystemParameters`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qsl

import grpc
from google.protobuf import json_format, symbol_database
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from proxy.cloudtasks_server.validation import ApiError

# Google's standard query parameters, accepted on every method (also with a leading "$").
SYSTEM_PARAMETERS = frozenset(
    {"$.xgafv", "access_token", "alt", "callback", "fields", "key", "oauth_token"}
    | {"prettyPrint", "quotaUser", "upload_protocol", "uploadType"}
)
_WELL_KNOWN = "google.protobuf."
_FIELD_MASK = "google.protobuf.FieldMask"
_MASK_PATH_RE = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_INT_RE = re.compile(r"^-?[0-9]+$")
_INTS = {
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_FIXED64,
}  # fmt: skip
_FLOATS = {FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT}
_TYPE_NAMES = {
    value: name for name, value in vars(FieldDescriptor).items() if name.startswith("TYPE_")
}
# Typed aliases of untyped protobuf helpers.
_parse_dict: Callable[..., Any] = json_format.ParseDict
_symbols: Callable[[], Any] = symbol_database.Default


class BadRequestError(ApiError):
    """INVALID_ARGUMENT about one field of the request (``field``: its proto path, ``""``
    for the request itself), rendered with a ``google.rpc.BadRequest`` detail."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, message)
        self.field = field

    def details(self) -> list[dict[str, Any]]:
        """The ``details`` of the error JSON."""
        violation = {"field": self.field} if self.field else {}
        violation["description"] = self.message
        return [
            {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
        ]


@dataclass(frozen=True)
class SystemParameters:
    """What the standard query parameters ask of the answer: ``alt`` (``json`` or
    ``proto``), enums as numbers (``alt=json;enum-encoding=int``), ``fields`` (a partial
    response selector, ``None`` for all) and ``pretty`` (``prettyPrint``, default true)."""

    alt: str = "json"
    enums_as_numbers: bool = False
    fields: str | None = None
    pretty: bool = True


def system_name(name: str) -> str | None:
    """The standard parameter a query parameter is (``$fields`` is ``fields``), or ``None``."""
    bare = name[1:] if name.startswith("$") and name != "$.xgafv" else name
    return bare if bare in SYSTEM_PARAMETERS else None


def system_parameters(query: str) -> SystemParameters:
    """The system parameters of the raw query string (bad values: :class:`BadRequestError`)."""
    given = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        bare = system_name(name)
        if bare is not None:
            given[bare] = value
    alt, _, options = given.get("alt", "json").partition(";")
    if alt not in ("json", "proto") or options not in ("", "enum-encoding=int"):
        raise BadRequestError(
            f"Invalid value at 'alt', \"{given['alt']}\": use json or proto.", "alt"
        )
    pretty = given.get("prettyPrint", "true")
    if pretty not in ("true", "false"):
        raise _invalid_value("pretty_print", "TYPE_BOOL", pretty)
    if given.get("$.xgafv", "1") not in ("1", "2"):
        raise BadRequestError(f"Invalid value at '$.xgafv', \"{given['$.xgafv']}\": use 1 or 2.")
    return SystemParameters(
        alt=alt,
        enums_as_numbers=options == "enum-encoding=int",
        fields=given.get("fields"),
        pretty=pretty == "true",
    )


def build_request(
    request_type: Any,
    variables: dict[str, str],
    body_field: str | None,
    body: bytes,
    query: str,
) -> Any:
    """The request message (an instance of ``request_type``, proto-plus or protobuf) of a
    call: ``variables`` are the path's field paths and values, ``body_field`` the binding's
    body (``None``, ``"*"`` or a field name)."""
    request = request_type()
    pb: Message = request_type.pb(request) if hasattr(request_type, "pb") else request
    descriptor = cast(Descriptor, pb.DESCRIPTOR)
    data: dict[str, Any] = {}
    if body and body_field is not None:
        payload = _json(body)
        data = payload if body_field == "*" else {body_field: payload}
        _check_message(descriptor, data, "")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if system_name(name) is not None:
            continue
        path = _query_field(descriptor, name, body_field)
        _assign(data, path, _query_value(path[-1], value, ".".join(f.name for f in path)))
    for name, value in variables.items():
        fields: list[FieldDescriptor] = []
        message: Any = descriptor
        for part in name.split("."):
            fields.append(message.fields_by_name[part])
            message = fields[-1].message_type
        _assign(data, fields, value, replace=True)
    try:
        _parse_dict(data, pb)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise BadRequestError(f"Invalid JSON payload received. {exc}") from None
    return request


def _json(body: bytes) -> Any:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"Invalid JSON payload received. {exc}.") from None
    except RecursionError:
        raise BadRequestError("Invalid JSON payload received. Nested too deeply.") from None
    if not isinstance(payload, dict):
        raise BadRequestError("Invalid JSON payload received. The body must be a JSON object.")
    return payload


def _invalid_value(path: str, type_name: str, value: Any) -> BadRequestError:
    shown = value if isinstance(value, str) else json.dumps(value)
    return BadRequestError(f"Invalid value at '{path}' ({type_name}), \"{shown}\"", path)


def _type_name(field: FieldDescriptor) -> str:
    if field.enum_type is not None:
        return f"type.googleapis.com/{field.enum_type.full_name}"
    if field.message_type is not None:
        return f"type.googleapis.com/{field.message_type.full_name}"
    return _TYPE_NAMES[field.type]


def _field(message: Descriptor, name: str) -> FieldDescriptor | None:
    by_json = {f.json_name: f for f in message.fields}
    return by_json.get(name) or message.fields_by_name.get(name)


def _check_message(message: Descriptor, value: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise _invalid_value(path, f"type.googleapis.com/{message.full_name}", value)
    for key, item in value.items():
        field = _field(message, key)
        if field is None:
            where = f" at '{path}'" if path else ""
            raise BadRequestError(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.',
                path,
            )
        if item is not None:
            _check_field(field, item, f"{path}.{field.name}" if path else field.name)


def _check_field(field: FieldDescriptor, value: Any, path: str) -> None:
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise _invalid_value(path, _type_name(field), value)
        for key, item in value.items():
            _check_single(entry.fields_by_name["value"], item, f"{path}[{key}]")
    elif field.is_repeated:
        if not isinstance(value, list):
            raise _invalid_value(path, _type_name(field), value)
        for i, item in enumerate(value):
            _check_single(field, item, f"{path}[{i}]")
    else:
        _check_single(field, value, path)


def _check_single(field: FieldDescriptor, value: Any, path: str) -> None:
    """One value of ``field`` (a JSON value); the proto3 JSON mapping's forms."""
    message = field.message_type
    if message is not None and not message.full_name.startswith(_WELL_KNOWN):
        _check_message(message, value, path)
        return
    if message is not None:  # Duration, Timestamp, FieldMask, ...: let protobuf judge
        try:
            _parse_dict(value, _well_known(message.full_name))
        except (json_format.ParseError, TypeError, ValueError):
            raise _invalid_value(path, _type_name(field), value) from None
        return
    if field.enum_type is not None:
        known = field.enum_type.values_by_name if isinstance(value, str) else None
        if known is None and not (isinstance(value, int) and not isinstance(value, bool)):
            raise _invalid_value(path, _type_name(field), value)
        if (known is not None and value not in known) or (
            known is None and value not in field.enum_type.values_by_number
        ):
            raise _invalid_value(path, _type_name(field), value)
        return
    if not _scalar_fits(field.type, value):
        raise _invalid_value(path, _type_name(field), value)


def _well_known(full_name: str) -> Message:
    instance: Message = _symbols().GetSymbol(full_name)()
    return instance


def _scalar_fits(kind: int, value: Any) -> bool:
    if kind == FieldDescriptor.TYPE_BOOL:
        return isinstance(value, bool)
    if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if kind in _INTS:
        if isinstance(value, str):
            return bool(_INT_RE.match(value))
        return isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if kind in _FLOATS:
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                return False
            return True
        return isinstance(value, (int, float))
    return False


def _query_field(message: Descriptor, name: str, body_field: str | None) -> list[FieldDescriptor]:
    """The field path a query parameter names: scalars, enums, repeated scalars and
    string-valued well-known types (a field mask, a duration) outside the body."""
    path: list[FieldDescriptor] = []
    current: Descriptor | None = message
    for part in name.split("."):
        field = _field(current, part) if current is not None else None
        if field is None:
            break
        path.append(field)
        current = field.message_type
    last = path[-1] if path else None
    bindable = (
        last is not None
        and len(path) == len(name.split("."))
        and body_field != "*"
        and path[0].name != body_field
        and (last.message_type is None or last.message_type.full_name.startswith(_WELL_KNOWN))
        and not (last.message_type is not None and last.message_type.GetOptions().map_entry)
    )
    if not bindable:
        raise BadRequestError(
            f'Invalid JSON payload received. Unknown name "{name}": Cannot bind query parameter.'
            f" Field '{name}' could not be found in request message."
        )
    return path


def _query_value(field: FieldDescriptor, value: str, path: str) -> Any:
    """A query string value as the JSON value of ``field`` (checked)."""
    converted: Any = value
    if field.message_type is not None and field.message_type.full_name == _FIELD_MASK:
        converted = _camel_mask(value, path)
    elif field.type == FieldDescriptor.TYPE_BOOL:
        if value not in ("true", "false"):
            raise _invalid_value(path, "TYPE_BOOL", value)
        converted = value == "true"
    elif field.enum_type is not None and _INT_RE.match(value):
        converted = int(value)
    _check_single(field, converted, path)
    return converted


def _camel_mask(value: str, path: str) -> str:
    """A field mask's paths in the JSON (lowerCamel) form protobuf parses, from either the
    snake_case form (what gRPC and Google's samples use) or lowerCamel."""
    paths = [p.strip() for p in value.split(",") if p.strip()]
    if any(not _MASK_PATH_RE.match(p) for p in paths):
        raise _invalid_value(path, f"type.googleapis.com/{_FIELD_MASK}", value)
    return ",".join(re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in paths)


def _assign(
    data: dict[str, Any], path: list[FieldDescriptor], value: Any, *, replace: bool = False
) -> None:
    """Set ``value`` at ``path`` in the JSON request; a path variable (``replace``) takes
    the place of the same field given in the body, under either name."""
    node = data
    for field in path[:-1]:
        child = node.get(field.json_name, node.get(field.name))
        if not isinstance(child, dict):
            child = {}
        node.pop(field.json_name, None)
        node[field.name] = child
        node = child
    last = path[-1]
    if replace:
        node.pop(last.json_name, None)
    if last.is_repeated and not replace:
        node.setdefault(last.name, []).append(value)
    else:
        node[last.name] = value
