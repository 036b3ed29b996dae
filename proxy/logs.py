"""Structured logs: one JSON object per line, or a readable line on a terminal.

Log records carry their fields in ``extra={"fields": {...}}``; the formatters render them.
Never put bodies, API keys, tokens or full query strings in fields.

Once :func:`configure_logging` ran, every line goes to a :class:`~proxy.logsink.LineSink`,
which never blocks (a full buffer drops lines and counts them). The per-request lines (the
access log, delivery attempts) skip the ``logging`` machinery altogether: :func:`emit`
builds the line itself and hands it to the sink.
"""

from __future__ import annotations

import contextlib
import json
import json.encoder
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal, Protocol

from proxy.logsink import sink_for_fd

LogFormat = Literal["auto", "json", "text"]


class LineFormat(Protocol):
    """Builds one line: :func:`json_line` or :func:`text_line`."""

    def __call__(
        self,
        second: int,
        millis: int,
        level: str,
        logger: str,
        msg: str,
        fields: Mapping[str, Any],
        exc: str | None = None,
    ) -> str: ...


def _make_encode() -> Callable[[dict[str, Any]], str]:
    """``json.dumps(entry, default=str)``, with the C encoder made once rather than per call
    (that alone was half the cost of a line)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython has the C encoder
        return json.JSONEncoder(default=str).encode
    # markers=None: no check for circular structures (fields are flat); the rest as dumps
    chunks = make(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ",
                  False, False, True)  # fmt: skip

    def encode(entry: dict[str, Any]) -> str:
        return "".join(chunks(entry, 0))

    return encode


_encode = _make_encode()
_encode_value: Callable[[Any], str] = _encode  # any JSON value
_quote: Callable[[str], str] = json.encoder.encode_basestring_ascii
_RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})  # keys a field would replace
_LEVEL_NAMES = {
    logging.CRITICAL: "critical",
    logging.ERROR: "error",
    logging.WARNING: "warning",
    logging.INFO: "info",
    logging.DEBUG: "debug",
}
# Quoted once: ", level, logger, msg" heads by (level, logger, msg), and ', "key": ' by key
_heads: dict[tuple[str, str, str], str] = {}
_keys: dict[str, str] = {}
_KEPT = 512  # entries each keeps at most
# The second-resolution part of the timestamps, made once per second: (second, text).
_utc_second: tuple[int, str] = (-1, "")
_local_second: tuple[int, str] = (-1, "")


def _utc_stamp(second: int) -> str:
    global _utc_second
    cached = _utc_second
    if cached[0] != second:
        cached = _utc_second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return cached[1]


def _local_stamp(second: int) -> str:
    global _local_second
    cached = _local_second
    if cached[0] != second:
        cached = _local_second = (second, time.strftime("%H:%M:%S", time.localtime(second)))
    return cached[1]


def _scalar(value: Any) -> str:
    """A value that is not a ``str``, as a JSON line has it: ``repr`` for an int or a
    finite float (what ``json.dumps`` writes, cheaper), else ``json.dumps``'s text."""
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return _encode_value(value)


def json_line(
    second: int,
    millis: int,
    level: str,
    logger: str,
    msg: str,
    fields: Mapping[str, Any],
    exc: str | None = None,
) -> str:
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}`` on one line, at
    ``second`` (since the epoch, UTC) and ``millis`` (0-999); ``exc`` a formatted traceback."""
    if _RESERVED.isdisjoint(fields):
        # The usual case, by hand: the same text as json.dumps of the dict below, at a
        # fifth of its cost (this runs once per request and per delivery). The parts that
        # repeat (level, logger and message; the keys) are quoted once and kept.
        head = _heads.get((level, logger, msg))
        if head is None:
            head = f'Z", "level": {_quote(level)}, "logger": {_quote(logger)}, "msg": {_quote(msg)}'
            if len(_heads) < _KEPT:  # bounded: a message may be made of arguments
                _heads[(level, logger, msg)] = head
        parts = ['{"ts": "', _utc_stamp(second), f".{millis:03d}", head]
        for key, value in fields.items():
            name = _keys.get(key)
            if name is None:
                if type(key) is not str:  # not kept: 1 and True are one dict key
                    name = f", {_encode_value(key)}: "
                else:
                    name = f", {_quote(key)}: "
                    if len(_keys) < _KEPT:
                        _keys[key] = name
            parts += (name, _quote(value) if type(value) is str else _scalar(value))
        if exc:
            parts += (', "exc": ', _quote(exc))
        parts.append("}")
        return "".join(parts)
    entry: dict[str, Any] = {
        "ts": f"{_utc_stamp(second)}.{millis:03d}Z",
        "level": level,
        "logger": logger,
        "msg": msg,
    }
    entry.update(fields)
    if exc:
        entry["exc"] = exc
    return _encode(entry)


def text_line(
    second: int,
    millis: int,
    level: str,
    logger: str,
    msg: str,
    fields: Mapping[str, Any],
    exc: str | None = None,
) -> str:
    """``HH:MM:SS level logger: msg key=value ...`` (local time; ``millis`` is not shown)."""
    line = f"{_local_stamp(second)} {level:7} {logger}: {msg}"
    if fields:
        line = f"{line} {' '.join(f'{k}={v}' for k, v in fields.items())}"
    if exc:
        line = f"{line}\n{exc}"
    return line


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


def _format_record(
    formatter: logging.Formatter, line: LineFormat, record: logging.LogRecord
) -> str:
    exc = formatter.formatException(record.exc_info) if record.exc_info else None
    return line(
        int(record.created),
        int(record.msecs),
        record.levelname.lower(),
        record.name,
        record.getMessage(),
        _fields(record),
        exc,
    )


class JsonFormatter(logging.Formatter):
    """``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return _format_record(self, json_line, record)


class TextFormatter(logging.Formatter):
    """``HH:MM:SS level logger msg key=value ...`` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return _format_record(self, text_line, record)


class Lines(Protocol):
    """Where finished lines go: a :class:`~proxy.logsink.LineSink`, or a test's capture."""

    def put(self, line: str) -> None:
        """Take one line (no newline); must not block."""


class SinkHandler(logging.Handler):
    """A handler that formats each record and hands the line to ``sink``; never blocks.

    ``line`` is the format :func:`emit` uses for the lines that skip ``logging``.
    """

    def __init__(self, sink: Lines, formatter: logging.Formatter, line: LineFormat) -> None:
        super().__init__()
        self.setFormatter(formatter)
        self.sink = sink
        self.line = line

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: formatting keeps no state and the sink takes lines from any thread.
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return passed

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.sink.put(self.format(record))
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Nothing to do here: the sink flushes itself at exit, with a bounded wait."""


# Loggers held at WARNING or above: httpx logs every request with its full URL, query
# string included (deliveries no longer use it, but a program embedding the proxy may).
_QUIETED = ("httpx", "httpcore")
_handler: SinkHandler | None = None  # set by configure_logging
_root = logging.getLogger()


def emit(logger: logging.Logger, level: int, msg: str, fields: Mapping[str, Any]) -> None:
    """Log ``msg`` with ``fields`` at ``level`` (e.g. ``logging.INFO``) as ``logger``: a
    per-request line. The caller checks ``logger.isEnabledFor(level)`` first.

    While the handler :func:`configure_logging` installed is on the root logger, the line
    is built here and goes straight to its sink (no LogRecord, no lock); otherwise (the
    proxy embedded in a program with its own logging, tests) through ``logging``.
    """
    handler = _handler
    if handler is None or handler not in _root.handlers:
        logger.log(level, msg, extra={"fields": fields})
        return
    now = time.time()
    second = int(now)
    name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
    try:
        line = handler.line(second, int((now - second) * 1000), name, logger.name, msg, fields)
    except Exception:  # a field json cannot encode: logging reports it, as it always did
        logger.log(level, msg, extra={"fields": fields})
        return
    handler.sink.put(line)


class FixedLine:
    """A per-request line whose fields are always ``keys``, in that order (the access
    log's 202, a delivery that succeeded): :meth:`emit` renders it from the values alone,
    the same text as :func:`emit` makes of the same fields, at about a third of the cost:
    no dict of fields, and the line is put together by a function made for these keys."""

    __slots__ = ("_render", "keys", "level", "logger", "msg")

    def __init__(self, logger: logging.Logger, level: int, msg: str, keys: tuple[str, ...]):
        if not _RESERVED.isdisjoint(keys) or len(set(keys)) != len(keys):
            raise ValueError(f"keys must be distinct and none of {sorted(_RESERVED)}")
        self.logger = logger
        self.level = level
        self.msg = msg
        self.keys = keys
        name = _LEVEL_NAMES.get(level) or logging.getLevelName(level).lower()
        bare = json_line(0, 0, name, logger.name, msg, {})  # '{"ts": "...Z", ..., "msg": ...}'
        # The source names only its arguments and the constants in ``space``; the keys and
        # the message are constants there, never part of the code.
        space: dict[str, Any] = {"_q": _quote, "_s": _scalar, "_c0": '{"ts": "', "_end": "}"}
        space["_c1"] = bare[bare.index('Z", "level"') : -1]
        parts = ["_c0", "_ts", "_ms", "_c1"]
        for i, key in enumerate(keys):
            space[f"_k{i}"] = f", {_quote(key)}: "
            parts += [f"_k{i}", f"(_q(v{i}) if type(v{i}) is str else _s(v{i}))"]
        arguments = "".join(f", v{i}" for i in range(len(keys)))
        source = f"def render(_ts, _ms{arguments}):\n    return ''.join(({', '.join(parts)}, _end))"
        exec(source, space)  # noqa: S102 - made from the fixed text above only
        self._render: Callable[..., str] = space["render"]

    def emit(self, *values: Any) -> None:
        """Log one line with ``values`` for :attr:`keys` (the caller checks that the
        logger is enabled for the level first). Never blocks."""
        handler = _handler
        if handler is None or handler.line is not json_line or handler not in _root.handlers:
            emit(self.logger, self.level, self.msg, dict(zip(self.keys, values, strict=True)))
            return
        now = time.time()
        second = int(now)
        try:
            line = self._render(_utc_stamp(second), _MILLIS[int((now - second) * 1000)], *values)
        except Exception:  # a value json cannot encode, or not one per key: logging says so
            emit(self.logger, self.level, self.msg, dict(zip(self.keys, values, strict=False)))
            return
        handler.sink.put(line)


_MILLIS = tuple(f".{n:03d}" for n in range(1000))


def configure_logging(
    level: str = "info", fmt: LogFormat = "auto", *, sink: Lines | None = None
) -> None:
    """Send every log record (uvicorn's too) and every :func:`emit` line to ``sink`` in one
    format: by default the process's non-blocking sink on stderr.

    ``auto`` is JSON unless stderr is a terminal. When stderr is not a real file (replaced
    in-process by a test), records are written to it directly, as ``logging`` would.
    """
    global _handler
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    formatter = JsonFormatter() if use_json else TextFormatter()
    handler: logging.Handler
    if sink is None:
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            sys.stderr.flush()
            sink = sink_for_fd(fd)
    if sink is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter)
        _handler = None
    else:
        handler = _handler = SinkHandler(sink, formatter, json_line if use_json else text_line)
    for existing in list(_root.handlers):
        _root.removeHandler(existing)
    _root.addHandler(handler)
    _root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    for name in _QUIETED:
        logging.getLogger(name).setLevel(max(logging.WARNING, _root.level))


@contextlib.contextmanager
def logging_to(sink: Lines, level: str = "info", fmt: LogFormat = "json") -> Iterator[None]:
    """:func:`configure_logging` to ``sink`` inside the block; afterwards the root logger's
    handlers and the levels it set are what they were (tests)."""
    global _handler
    names = _QUIETED
    saved = (list(_root.handlers), _root.level, [logging.getLogger(n).level for n in names])
    saved_handler = _handler
    try:
        configure_logging(level, fmt, sink=sink)
        yield
    finally:
        _handler = saved_handler
        _root.handlers[:] = saved[0]
        _root.setLevel(saved[1])
        for name, saved_level in zip(names, saved[2], strict=True):
            logging.getLogger(name).setLevel(saved_level)
