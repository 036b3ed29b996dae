"""`ingest-proxy queues apply`: Cloud Tasks queues made to match the config file.

Runs against two real gRPC servers that keep queue state (the PyPI emulator ignores
UpdateQueue): the state-keeping fake of tests/support/queue_server.py and our own
cloudtasks-server. State is read back through GetQueue with the real client.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2 import Queue

from proxy.cli.main import main
from tests.support.cloudtasks_server import run_server, sync_client
from tests.support.queue_server import run_queue_server

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


@pytest.fixture(params=["state-keeping-fake", "cloudtasks-server"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``host:port`` of a Cloud Tasks server that keeps queue state."""
    if request.param == "cloudtasks-server":
        with run_server(tmp_path / "ct.db") as server:
            yield server.host
    else:
        with run_queue_server() as fake:
            yield fake.host


def _queue(host: str) -> Queue | None:
    client, channel = sync_client(host)
    try:
        return client.get_queue(name=PATH)
    except core_exceptions.NotFound:
        return None
    finally:
        channel.close()


def _apply(host: str, config: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> list[str]:
    argv = ["queues", "apply", "--config", str(config), "--emulator-host", host, *extra]
    assert main(argv) == 0
    return capsys.readouterr().out.splitlines()


def test_apply_creates_updates_then_reports_no_change(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """First run creates the queue, a changed rate and max_attempts are updated (other
    fields kept), a third run changes nothing."""
    out = _apply(host, _config(tmp_path, rate=5), capsys)
    assert out[0].startswith("+ create queue orders: rate=5.0, concurrency=4, max_attempts=5")
    queue = _queue(host)
    assert queue is not None
    assert queue.rate_limits.max_dispatches_per_second == 5
    assert queue.retry_config.max_doublings == 3
    assert queue.retry_config.min_backoff.total_seconds() == 1

    out = _apply(host, _config(tmp_path, rate=10, attempts=7), capsys)
    assert out == ["~ update queue orders: rate 5.0 -> 10.0; max_attempts 5 -> 7"]
    queue = _queue(host)
    assert queue is not None
    assert queue.rate_limits.max_dispatches_per_second == 10
    assert queue.retry_config.max_attempts == 7
    assert queue.rate_limits.max_concurrent_dispatches == 4  # untouched fields stay
    assert queue.retry_config.max_backoff.total_seconds() == 300

    assert _apply(host, _config(tmp_path, rate=10, attempts=7), capsys) == [
        "= queue orders: no changes"
    ]


def test_dry_run_changes_nothing(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run prints the diff and leaves the server untouched."""
    out = _apply(host, _config(tmp_path, rate=5), capsys, "--dry-run")
    assert out[0].startswith("+ create queue orders")
    assert out[-1] == "dry run: nothing was changed"
    assert _queue(host) is None
    _apply(host, _config(tmp_path, rate=5), capsys)
    out = _apply(host, _config(tmp_path, rate=20), capsys, "--dry-run")
    assert out[0] == "~ update queue orders: rate 5.0 -> 20.0"
    queue = _queue(host)
    assert queue is not None
    assert queue.rate_limits.max_dispatches_per_second == 5


def test_cloudtasks_server_derives_the_burst(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """On cloudtasks-server an applied rate re-derives max_burst_size (output-only)."""
    with run_server(tmp_path / "ct.db") as server:
        _apply(server.host, _config(tmp_path, rate=10), capsys)
        queue = _queue(server.host)
    assert queue is not None
    assert queue.rate_limits.max_burst_size == 2


def test_apply_refusal_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable Cloud Tasks endpoint gives exit status 1 and a one-line reason."""
    config = _config(tmp_path, rate=5)
    status = main(["queues", "apply", "--config", str(config), "--emulator-host", "127.0.0.1:9"])
    assert status == 1
    assert capsys.readouterr().err.startswith("ingest-proxy: ")
