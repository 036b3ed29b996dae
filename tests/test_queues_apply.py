"""`ingest-proxy queues apply`: Cloud Tasks queues made to match the config file, against a
real gRPC server that keeps queue state (tests/support/queue_server.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from tests.support.queue_server import QueueStateServer, run_queue_server

PATH = "projects/p/locations/l/queues/orders"


def _config(tmp_path: Path, rate: float, attempts: int = 5) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f"""
engine = "cloudtasks"
[cloudtasks]
project = "p"
location = "l"
[[queues]]
name = "orders"
target = "https://backend.example"
rate = {rate}
concurrency = 4
[queues.retry]
max_attempts = {attempts}
min_backoff = "1s"
max_backoff = "5m"
max_doublings = 3
"""
    )
    return path


def _apply(
    server: QueueStateServer, config: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> list[str]:
    argv = ["queues", "apply", "--config", str(config), "--emulator-host", server.host, *extra]
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


@pytest.fixture
def server() -> object:
    with run_queue_server() as running:
        yield running


def test_apply_creates_updates_then_reports_no_change(
    server: QueueStateServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run creates the queue, a changed rate is updated, a third run changes nothing."""
    out = _apply(server, _config(tmp_path, rate=5), capsys)
    assert out[0].startswith("+ create queue orders: rate=5.0, concurrency=4, max_attempts=5")
    queue = server.queues[PATH]
    assert queue.rate_limits.max_dispatches_per_second == 5
    assert queue.retry_config.max_doublings == 3
    assert queue.retry_config.min_backoff.total_seconds() == 1

    out = _apply(server, _config(tmp_path, rate=10, attempts=7), capsys)
    assert out == ["~ update queue orders: rate 5.0 -> 10.0; max_attempts 5 -> 7"]
    queue = server.queues[PATH]
    assert queue.rate_limits.max_dispatches_per_second == 10
    assert queue.retry_config.max_attempts == 7
    assert queue.rate_limits.max_concurrent_dispatches == 4  # untouched fields stay

    assert _apply(server, _config(tmp_path, rate=10, attempts=7), capsys) == [
        "= queue orders: no changes"
    ]
    assert server.calls["CreateQueue"] == 1
    assert server.calls["UpdateQueue"] == 1


def test_dry_run_changes_nothing(
    server: QueueStateServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the diff and leaves the server untouched."""
    out = _apply(server, _config(tmp_path, rate=5), capsys, "--dry-run")
    assert out[0].startswith("+ create queue orders")
    assert out[-1] == "dry run: nothing was changed"
    assert server.queues == {}
    _apply(server, _config(tmp_path, rate=5), capsys)
    out = _apply(server, _config(tmp_path, rate=20), capsys, "--dry-run")
    assert out[0] == "~ update queue orders: rate 5.0 -> 20.0"
    assert server.queues[PATH].rate_limits.max_dispatches_per_second == 5
    assert server.calls["UpdateQueue"] == 0


def test_apply_refusal_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable Cloud Tasks endpoint gives exit status 1 and a one-line reason."""
    config = _config(tmp_path, rate=5)
    status = main(["queues", "apply", "--config", str(config), "--emulator-host", "127.0.0.1:9"])
    assert status == 1
    assert capsys.readouterr().err.startswith("ingest-proxy: ")
