"""Log formatting: JSON lines for machines, readable lines on a terminal; per-request lines
built without ``logging`` come out exactly as a logged record would."""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.logs import (
    FixedLine,
    JsonFormatter,
    SinkHandler,
    TextFormatter,
    configure_logging,
    emit,
    json_line,
    logging_to,
)
from tests.support.log_capture import CapturedLines

INGRESS = logging.getLogger("ingest_proxy.ingress")


def _record(
    fields: dict[str, object], level: int = logging.INFO, exc: bool = False
) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "ingest_proxy.ingress", level, __file__, 1, "request %s", ("x",), exc_info
    )
    record.fields = fields
    return record


# The formatters as they were before lines went to the non-blocking sink: the formats
# must not change (log pipelines parse them).
class _OldJson(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _OldText(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = getattr(record, "fields", {})
        extras = " ".join(f"{k}={v}" for k, v in fields.items())
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


FIELDS: list[dict[str, object]] = [
    {},
    {"queue": "q", "status": 202, "latency_ms": 0.412, "task": None, "ok": True},
    {"path": '/a"b\\c\n', "name": "héllo ☃", "when": datetime.date(2024, 1, 2)},
    {"msg": "a field named like a key", "level": "overrides"},
    {"nan": float("nan"), "big": 10**30, "list": [1, "a"], "dict": {"k": "v"}},
]


@pytest.mark.parametrize("fields", FIELDS)
@pytest.mark.parametrize("exc", [False, True])
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_formats_are_unchanged(fields: dict[str, object], exc: bool, level: int) -> None:
    """Both formatters write byte for byte what they wrote before."""
    record = _record(fields, level, exc)
    assert JsonFormatter().format(record) == _OldJson().format(record)
    assert TextFormatter().format(record) == _OldText().format(record)


def test_json_formatter_writes_one_object_per_line() -> None:
    """A record with fields becomes one JSON object holding level, logger, msg and fields."""
    line = JsonFormatter().format(_record({"queue": "q", "status": 202}))
    assert "\n" not in line
    entry = json.loads(line)
    assert list(entry) == ["ts", "level", "logger", "msg", "queue", "status"]
    assert entry["level"] == "info"
    assert entry["logger"] == "ingest_proxy.ingress"
    assert entry["msg"] == "request x"
    assert (entry["queue"], entry["status"]) == ("q", 202)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"])


def test_text_formatter_is_readable() -> None:
    """The terminal format puts fields as key=value after the message."""
    line = TextFormatter().format(_record({"queue": "q", "status": 202}))
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d info    ingest_proxy.ingress: request x queue=q status=202", line
    )


def test_json_timestamp_is_utc_with_milliseconds() -> None:
    """The cached second and the milliseconds make the same stamp strftime would."""
    for second in (0, 1_700_000_000, 1_700_000_001, 1_700_000_000):
        entry = json.loads(json_line(second, 7, "info", "l", "m", {}))
        expected = datetime.datetime.fromtimestamp(second, datetime.UTC)
        assert entry["ts"] == expected.strftime("%Y-%m-%dT%H:%M:%S") + ".007Z"


def _as_record(line_ts: float, level: int, fields: dict[str, object]) -> logging.LogRecord:
    record = logging.LogRecord("ingest_proxy.ingress", level, __file__, 1, "request", (), None)
    record.created, record.msecs = line_ts, (line_ts - int(line_ts)) * 1000
    record.fields = fields
    return record


@pytest.mark.parametrize("fields", FIELDS)
def test_emitted_json_line_is_the_logged_record(fields: dict[str, object]) -> None:
    """emit() builds, without a LogRecord, the very line logging the record would give."""
    captured = CapturedLines()
    with logging_to(captured, "info", "json"):
        emit(INGRESS, logging.WARNING, "request", fields)
    [line] = captured.lines
    stamp = datetime.datetime.strptime(json.loads(line)["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
    seconds = stamp.replace(tzinfo=datetime.UTC).timestamp() + 0.0001
    assert line == _OldJson().format(_as_record(seconds, logging.WARNING, fields))


@pytest.mark.parametrize("fields", FIELDS)
def test_emitted_text_line_is_the_logged_record(fields: dict[str, object]) -> None:
    """The same in the terminal format (whose stamp is local time to the second)."""
    captured = CapturedLines()
    with logging_to(captured, "info", "text"):
        emit(INGRESS, logging.INFO, "request", fields)
    [line] = captured.lines
    expected = _OldText().format(_as_record(time.time(), logging.INFO, fields))
    assert re.fullmatch(r"\d\d:\d\d:\d\d", line[:8])
    assert line[8:] == expected[8:]


def test_records_go_to_the_same_sink() -> None:
    """Records of any logger (uvicorn's too) reach the sink in the configured format."""
    captured = CapturedLines()
    with logging_to(captured, "info", "json"):
        logging.getLogger("uvicorn.error").warning("Invalid HTTP request from %s", "x")
        logging.getLogger("ingest_proxy").debug("not at level info")
        try:
            raise RuntimeError("x")
        except RuntimeError:
            logging.getLogger("ingest_proxy.local").exception("failed")
    first, second = (json.loads(line) for line in captured.lines)
    assert (first["logger"], first["msg"]) == ("uvicorn.error", "Invalid HTTP request from x")
    assert (second["level"], second["msg"]) == ("error", "failed")
    assert "RuntimeError: x" in second["exc"]


def test_emit_goes_through_logging_when_the_sink_is_not_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without configure_logging's handler on the root logger (the proxy embedded in a
    program with its own logging), emit() is an ordinary log record with its fields."""
    caplog.set_level(logging.INFO, logger="ingest_proxy")
    emit(INGRESS, logging.INFO, "request", {"queue": "q"})
    [record] = [r for r in caplog.records if r.name == "ingest_proxy.ingress"]
    assert record.getMessage() == "request"
    assert record.fields == {"queue": "q"}  # type: ignore[attr-defined]


def test_logging_to_puts_the_previous_setup_back() -> None:
    """After the block, the root logger has its handlers and level again."""
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    with logging_to(CapturedLines(), "debug", "text"):
        assert [type(h) for h in root.handlers] == [SinkHandler]
        assert root.level == logging.DEBUG
    assert (root.handlers, root.level) == before


def test_http_client_request_lines_are_silenced() -> None:
    """httpx's per-request INFO lines (full URL with query string) are not logged."""
    with logging_to(CapturedLines(), "info", "json"):
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("ingest_proxy").isEnabledFor(logging.INFO)


def test_stderr_replaced_in_process_is_written_directly(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """When stderr is not a real file (a test's capture), records go to it directly, as
    ``logging`` would write them, and emit() goes through logging."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("info", "json")
        assert [type(h) for h in root.handlers] == [logging.StreamHandler]
        emit(INGRESS, logging.INFO, "request", {"queue": "q"})
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    entry = json.loads(capsys.readouterr().err)
    assert (entry["msg"], entry["queue"]) == ("request", "q")


_VALUES = st.one_of(
    st.text(),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(
    fields=st.dictionaries(
        st.one_of(st.text(max_size=8), st.sampled_from(["ts", "level", "logger", "msg", "exc"])),
        _VALUES,
        max_size=8,
    ),
    exc=st.one_of(st.none(), st.text(min_size=1)),
    millis=st.integers(min_value=0, max_value=999),
    level=st.sampled_from(["info", "warning"]),
    msg=st.one_of(st.just('re"quest'), st.text(max_size=6)),
)
def test_json_line_is_what_json_dumps_writes(
    fields: dict[str, object], exc: str | None, millis: int, level: str, msg: str
) -> None:
    """The hand-built JSON line is character for character json.dumps of the entry, for
    any field names and values (escapes, non-finite floats, nested values, and names
    that collide with ts/level/logger/msg/exc) and messages (the quoted parts it keeps
    between lines must be the right ones)."""
    entry: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_764_633_600)) + f".{millis:03d}Z",
        "level": level,
        "logger": "ingest_proxy.ingress",
        "msg": msg,
    }
    entry.update(fields)
    if exc:
        entry["exc"] = exc
    line = json_line(1_764_633_600, millis, level, "ingest_proxy.ingress", msg, fields, exc)
    assert line == json.dumps(entry, default=str)


_keys = st.lists(
    st.text(min_size=1).filter(lambda k: k not in ("ts", "level", "logger", "msg", "exc")),
    min_size=1,
    max_size=8,
    unique=True,
)


def _same_second(make: Any) -> tuple[str, str]:
    """Two lines made by ``make()`` within one millisecond (retried otherwise)."""
    for _ in range(100):
        first, second = make()
        if first[:31] == second[:31]:  # '{"ts": "YYYY-MM-DDTHH:MM:SS.mmm'
            return first, second
    raise AssertionError("never two lines within one millisecond")


@given(keys=_keys, data=st.data())
def test_fixed_line_is_the_line_emit_makes(keys: list[str], data: st.DataObject) -> None:
    """A FixedLine's line is, character for character, the JSON line emit() makes of the
    same fields in the same order, whatever the keys and the values."""
    values = [data.draw(_VALUES) for _ in keys]
    line = FixedLine(INGRESS, logging.INFO, "request", tuple(keys))

    def make() -> tuple[str, str]:
        captured = CapturedLines()
        with logging_to(captured, "info", "json"):
            line.emit(*values)
            emit(INGRESS, logging.INFO, "request", dict(zip(keys, values, strict=True)))
        return captured.lines[0], captured.lines[1]

    fixed, general = _same_second(make)
    assert fixed == general
    assert json.loads(fixed)["msg"] == "request"


def test_fixed_line_in_the_text_format_is_the_emitted_line() -> None:
    """On a terminal (text format) a FixedLine is the line emit() makes there."""
    line = FixedLine(INGRESS, logging.INFO, "request", ("queue", "status"))
    captured = CapturedLines()
    with logging_to(captured, "info", "text"):
        line.emit("q", 202)
        emit(INGRESS, logging.INFO, "request", {"queue": "q", "status": 202})
    fixed, general = captured.lines
    assert fixed.endswith("request queue=q status=202")
    assert fixed[8:] == general[8:]


def test_fixed_line_goes_through_logging_when_the_sink_is_not_installed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Without configure_logging's handler, a FixedLine is a log record with its fields."""
    caplog.set_level(logging.INFO, logger="ingest_proxy")
    FixedLine(INGRESS, logging.INFO, "request", ("queue", "status")).emit("q", 202)
    [record] = [r for r in caplog.records if r.name == "ingest_proxy.ingress"]
    assert record.fields == {"queue": "q", "status": 202}  # type: ignore[attr-defined]


@pytest.mark.parametrize("keys", [("ts",), ("msg", "x"), ("a", "a")])
def test_fixed_line_refuses_reserved_or_repeated_keys(keys: tuple[str, ...]) -> None:
    """A key that would replace ts/level/logger/msg/exc, or a repeated one, is refused when
    the line is made, not at the first request."""
    with pytest.raises(ValueError, match="distinct"):
        FixedLine(INGRESS, logging.INFO, "request", keys)
