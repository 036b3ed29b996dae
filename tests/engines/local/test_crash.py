"""Crash safety and graceful shutdown with real ``python -m proxy serve`` processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.backend import RecordingBackend
from tests.support.servers import free_port, wait_for
from tests.support.spike import accepted, spike

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def serve(db: Path, target: str, *flags: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``python -m proxy serve`` on free ports; yields the process and its two base URLs."""
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "proxy", "serve", "--target", target, "--db", str(db),
            "--port", str(port), "--admin-port", str(admin), "--log-level", "warning", *flags,
        ],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"
    try:
        wait_for(lambda: _ready(admin_url, process), timeout=30, interval=0.1)
        yield process, url, admin_url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


def _ready(admin_url: str, process: subprocess.Popen[bytes]) -> bool:
    assert process.poll() is None, "the proxy exited during start-up"
    try:
        return httpx.get(admin_url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def accepted_so_far(admin_url: str) -> int:
    """202 answers counted by the proxy's own metrics."""
    try:
        text = httpx.get(admin_url + "/metrics", timeout=2).text
    except httpx.HTTPError:
        return 0
    found = re.findall(r'^ingest_proxy_requests_total\{[^}]*code="202"[^}]*\} (\S+)$', text, re.M)
    return int(sum(float(v) for v in found))


def spike_in_background(url: str, bodies: list[bytes]) -> tuple[threading.Thread, list[object]]:
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.extend(spike(url + "/ingest", bodies)))
    thread.start()
    return thread, out


def test_kill_9_loses_no_accepted_task(tmp_path: Path, backend: RecordingBackend) -> None:
    """kill -9 in the middle of a 2,000-request spike, restart on the same file: every
    request that got a 202 reaches the backend (duplicates are allowed and reported)."""
    backend.delay = 0.1  # attempts are in flight (leased) when the kill lands
    db = tmp_path / "crash.db"
    bodies = [b"crash-%05d" % n for n in range(2000)]
    with serve(db, backend.url, "--rate", "20", "--concurrency", "4") as (process, url, admin):
        thread, results = spike_in_background(url, bodies)
        wait_for(lambda: accepted_so_far(admin) >= 1000, timeout=60, interval=0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        thread.join(timeout=60)
    acked = accepted(bodies, results)  # type: ignore[arg-type]
    assert 1000 <= len(acked) < len(bodies), "the kill did not land mid-spike"
    delivered_before = len(backend.received)
    assert delivered_before < len(acked) / 2  # most acknowledged tasks were still queued
    backend.delay = 0.0
    with serve(db, backend.url, "--rate", "500", "--concurrency", "16"):
        wait_for(
            lambda: acked <= {r.body for r in backend.received},
            timeout=90,
            message="some acknowledged tasks never reached the backend after the restart",
        )
    counts = Counter(r.body for r in backend.received)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\nkill -9: {len(acked)} acknowledged, {delivered_before} delivered before the kill,"
        f" {duplicates} duplicate deliveries after restart"
    )
    assert set(counts) <= set(bodies)


def test_sigterm_drains_and_loses_nothing(tmp_path: Path, backend: RecordingBackend) -> None:
    """SIGTERM during a spike: requests get answers (202 or 503), attempts in flight
    finish, the process exits 0, and after a restart every 202 is delivered exactly once."""
    backend.delay = 0.3
    db = tmp_path / "term.db"
    bodies = [b"term-%05d" % n for n in range(1500)]
    with serve(db, backend.url, "--rate", "100", "--concurrency", "8") as (process, url, admin):
        thread, results = spike_in_background(url, bodies)
        wait_for(lambda: accepted_so_far(admin) >= 300, timeout=60, interval=0.01)
        wait_for(lambda: backend.in_flight > 0, timeout=30, interval=0.005)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        thread.join(timeout=60)
    statuses = Counter(
        r.status_code if isinstance(r, httpx.Response) else "no connection" for r in results
    )
    assert set(statuses) <= {202, 503, "no connection"}, statuses
    acked = accepted(bodies, results)  # type: ignore[arg-type]
    assert len(acked) >= 300
    before = Counter(r.body for r in backend.received)
    with serve(db, backend.url, "--rate", "500", "--concurrency", "16"):
        wait_for(
            lambda: acked <= {r.body for r in backend.received},
            timeout=90,
            message="some acknowledged tasks never reached the backend after the restart",
        )
        time.sleep(0.5)
    counts = Counter(r.body for r in backend.received)
    assert max(before.values()) == 1
    assert [body for body, n in counts.items() if n > 1] == []  # in-flight attempts finished
    assert set(counts) == acked
