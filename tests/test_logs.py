"""Log formatting: JSON lines for machines, readable lines on a terminal."""

from __future__ import annotations

import json
import logging

from proxy.logs import JsonFormatter, TextFormatter, configure_logging


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


def test_http_client_request_lines_are_silenced() -> None:
    """httpx's per-request INFO lines (full URL with query string) are not logged."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level)
    try:
        configure_logging("info", "json")
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert logging.getLogger("ingest_proxy").isEnabledFor(logging.INFO)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("httpx").setLevel(saved[2])
