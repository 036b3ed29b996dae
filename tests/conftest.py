"""Shared fixtures: real servers on 127.0.0.1 (see tests/support)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxy._compiled import stale_modules
from proxy.logs import logging_to
from tests.support.backend import RecordingBackend, run_backend
from tests.support.emulator import emulator  # noqa: F401  (session fixture)
from tests.support.fake_cloudtasks import fake_cloudtasks  # noqa: F401
from tests.support.log_capture import CapturedLines


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test an in-place build older than its sources: the edits would not run
    (the compiled module is imported, not the ``.py`` beside it)."""
    stale = stale_modules()
    if stale:
        pytest.exit(
            "compiled modules are older than their source, rebuild them first"
            f" (pip install -e '.[test]'): {', '.join(stale)}",
            returncode=3,
        )


@pytest.fixture
def backend() -> Iterator[RecordingBackend]:
    """A real recording backend on a free port of 127.0.0.1."""
    with run_backend() as running:
        yield running


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``@pytest.mark.anyio``) run on asyncio, the loop the proxy uses."""
    return "asyncio"


@pytest.fixture
def log_lines() -> Iterator[CapturedLines]:
    """Logging configured as ``ingest-proxy serve`` does (level info, JSON lines), into a
    capture instead of stderr: the lines exactly as the process would write them."""
    captured = CapturedLines()
    with logging_to(captured, "info", "json"):
        yield captured
