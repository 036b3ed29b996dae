"""`ingest-proxy queues apply` against cloudtasks-server: CreateQueue, then UpdateQueue
with a field mask, then nothing to do (the same steps tests/test_queues_apply.py runs
against a state-keeping fake)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.cli import main
from tests.support.cloudtasks_server import ServerThread, run_server, sync_client

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


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    with run_server(tmp_path / "ct.db") as running:
        yield running


def _apply(server: ServerThread, config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["queues", "apply", "--config", str(config), "--emulator-host", server.host]) == 0
    return capsys.readouterr().out.splitlines()


def test_apply_creates_updates_then_reports_no_change(
    server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run creates the queue, a changed rate and max_attempts are updated (other
    fields kept, burst re-derived), a third run changes nothing."""
    out = _apply(server, _config(tmp_path, rate=5), capsys)
    assert out[0].startswith("+ create queue orders: rate=5.0, concurrency=4, max_attempts=5")
    out = _apply(server, _config(tmp_path, rate=10, attempts=7), capsys)
    assert out == ["~ update queue orders: rate 5.0 -> 10.0; max_attempts 5 -> 7"]
    client, channel = sync_client(server.host)
    try:
        queue = client.get_queue(name=PATH)
    finally:
        channel.close()
    assert queue.rate_limits.max_dispatches_per_second == 10
    assert queue.rate_limits.max_burst_size == 2
    assert queue.rate_limits.max_concurrent_dispatches == 4
    assert queue.retry_config.max_attempts == 7
    assert queue.retry_config.max_doublings == 3
    assert queue.retry_config.min_backoff.total_seconds() == 1
    assert _apply(server, _config(tmp_path, rate=10, attempts=7), capsys) == [
        "= queue orders: no changes"
    ]
