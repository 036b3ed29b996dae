"""Log formatting: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import json
import logging

from proxy.logs import JsonFormatter, TextFormatter


def _record(**fields: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "ingest_proxy.ingress", logging.INFO, __file__, 1, "request", (), None
    )
    record.fields = fields
    return record


def test_json_formatter_writes_one_object_per_line() -> None:
    """A record with fields becomes one JSON object holding level, logger, msg and fields."""
    line = JsonFormatter().format(_record(queue="q", status=202))
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "info"
    assert entry["logger"] == "ingest_proxy.ingress"
    assert entry["msg"] == "request"
    assert (entry["queue"], entry["status"]) == ("q", 202)
    assert entry["ts"].endswith("Z")


def test_text_formatter_is_readable() -> None:
    """The terminal format puts fields as key=value after the message."""
    line = TextFormatter().format(_record(queue="q", status=202))
    assert "info" in line
    assert line.endswith("request queue=q status=202")
