"""Helpers shared by the fault tests: metrics read from the admin listener, settings, a
``python -m proxy serve`` process."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx

from proxy.config.settings import RetrySettings
from proxy.engines.retry import backoff_delay
from tests.support.servers import free_port, wait_for

TIMEOUT = 30.0  # seconds for any one wait: generous, CI machines are noisy


def metric(admin_url: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 if none)."""
    text = httpx.get(admin_url + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def earliest_start(retry: RetrySettings, attempt: int) -> float:
    """Seconds after the first attempt before which attempt number ``attempt`` (0 is the
    first) cannot start: the sum of the backoff delays before it."""
    return sum(backoff_delay(retry, k) for k in range(attempt))


def most_attempts(retry: RetrySettings, elapsed: float) -> int:
    """The most attempts one task can have made ``elapsed`` seconds after its first."""
    attempts = 1
    while earliest_start(retry, attempts) <= elapsed:
        attempts += 1
    return attempts


ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def proxy_process(
    *args: str, stderr: int | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``python -m proxy serve ARGS`` (log level warning unless ARGS say otherwise) on free
    ports of 127.0.0.1, ready (``/readyz`` 200); yields the process and its ingress and
    admin base URLs; kills it on exit. ``stderr``: as for ``subprocess.Popen``."""
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--admin-port",
         str(admin), "--log-level", "warning", *args],
        cwd=ROOT,
        env=env,
        stderr=stderr,
    )  # fmt: skip
    url, admin_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{admin}"

    def ready() -> bool:
        assert process.poll() is None, "the proxy exited during start-up"
        try:
            return httpx.get(admin_url + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, TIMEOUT, interval=0.1, message="the proxy did not become ready")
        yield process, url, admin_url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=TIMEOUT)
