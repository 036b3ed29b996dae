"""`ingest-proxy cloudtasks-server` refuses bad flags and a file another process owns."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cli.main import main
from tests.support.cloudtasks_server import run_server


def test_bad_port_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    """A port outside 0-65535 exits with status 2 and says why."""
    assert main(["cloudtasks-server", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """The command configures logging for the process; put the test run's back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restore_logging")
def test_file_in_use_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second server on the same SQLite file exits with status 1 and logs why."""
    db = tmp_path / "ct.db"
    with run_server(db):
        assert main(["cloudtasks-server", "--port", "0", "--db", str(db)]) == 1
    assert "is in use by another process" in capsys.readouterr().err
