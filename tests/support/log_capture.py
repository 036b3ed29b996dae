"""The log lines a test produced, as the process would write them to stderr."""

from __future__ import annotations

import json
import threading
from typing import Any


class CapturedLines:
    """A log sink for tests (``put`` like :class:`proxy.logsink.LineSink`) keeping every
    formatted line; safe from any thread (servers run in their own)."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()

    def put(self, line: str) -> None:
        """Keep ``line``."""
        with self._lock:
            self.lines.append(line)

    def entries(self, logger: str | None = None) -> list[dict[str, Any]]:
        """The JSON lines kept so far, parsed; only ``logger``'s when given."""
        with self._lock:
            parsed = [json.loads(line) for line in self.lines]
        return [e for e in parsed if logger is None or e["logger"] == logger]
