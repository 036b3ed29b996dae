"""A real ``ingest-proxy serve`` whose stderr nobody reads keeps serving: the pipe fills,
the log buffer fills, then log lines are dropped and counted, and every request still gets
its 202 (issue 13: the whole proxy used to freeze after about 200 requests)."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.logsink import MAX_LINES
from tests.faults.common import proxy_process
from tests.support.servers import free_port

TIMEOUT = 30.0  # seconds for any one wait
CONNECTIONS = 8  # keep-alive connections sending at once (the commits group their tasks)
BATCH = 16  # requests pipelined on a connection before reading their answers
REQUEST = b"POST /stalled HTTP/1.1\r\nHost: proxy\r\nContent-Length: 2\r\n\r\nhi"
AFTER_DROPS = 5_000  # requests sent once lines are being dropped


@pytest.fixture
def stalled_proxy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """``ingest-proxy serve`` (embedded engine, access log on at level info, delivery to a
    closed port) with its stderr a pipe this test never reads. Yields the process, the
    admin base URL and the ingress port; kills the process by its PID at the end."""
    with proxy_process(
        "--target", f"http://127.0.0.1:{free_port()}", "--rate", "1", "--log-level", "info",
        "--log-format", "json", "--shutdown-grace", "1", "--db", str(tmp_path / "tasks.db"),
        stderr=subprocess.PIPE,  # never read
    ) as (process, url, admin_url):  # fmt: skip
        try:
            yield process, admin_url, int(url.rsplit(":", 1)[1])
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=TIMEOUT)
            assert process.stderr is not None
            process.stderr.close()


def _send(host: str, port: int, count: int) -> list[int]:
    """POST ``count`` requests over one keep-alive connection, ``BATCH`` pipelined at a
    time; the status code of each answer."""
    statuses: list[int] = []
    with socket.create_connection((host, port), timeout=TIMEOUT) as sock:
        buf = b""
        while len(statuses) < count:
            batch = min(BATCH, count - len(statuses))
            sock.sendall(REQUEST * batch)
            answered = 0
            while answered < batch:
                end = buf.find(b"\r\n\r\n")
                if end >= 0:
                    head = buf[:end]
                    match = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
                    total = end + 4 + (int(match.group(1)) if match else 0)
                    if len(buf) >= total:
                        statuses.append(int(head[9:12]))
                        buf = buf[total:]
                        answered += 1
                        continue
                chunk = sock.recv(65536)  # bounded by the socket's timeout
                if not chunk:
                    raise ConnectionError(f"closed after {len(statuses)} answers")
                buf += chunk
    return statuses


def _spike(host: str, port: int, total: int) -> list[int]:
    """``total`` requests over ``CONNECTIONS`` connections at once; every status code."""
    results: list[list[int]] = [[] for _ in range(CONNECTIONS)]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = _send(host, port, total // CONNECTIONS + (i < total % CONNECTIONS))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(CONNECTIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT * 4)
    assert not any(thread.is_alive() for thread in threads), "requests hung"
    assert not errors, errors
    return [status for statuses in results for status in statuses]


def _dropped(admin_url: str) -> float:
    text = httpx.get(admin_url + "/metrics", timeout=TIMEOUT).text
    match = re.search(r"^ingest_proxy_log_lines_dropped_total (\S+)$", text, re.M)
    assert match, "the metric is exported"
    return float(match.group(1))


def _healthy(admin_url: str) -> bool:
    return httpx.get(admin_url + "/healthz", timeout=TIMEOUT).status_code == 200


def test_unread_stderr_drops_log_lines_not_requests(
    stalled_proxy: tuple[subprocess.Popen[bytes], str, int],
) -> None:
    """Past the pipe's 64 KiB and the log buffer, lines are dropped (and counted); the
    ingress keeps answering 202 and /healthz keeps answering; SIGTERM still ends the
    process (the exit's flush of the buffer gives up on the stalled pipe)."""
    process, admin_url, port = stalled_proxy
    host = "127.0.0.1"
    assert _dropped(admin_url) == 0
    # Fill the pipe (a few hundred lines) and the log buffer, until lines are dropped.
    sent, step = 0, 2_000
    while _dropped(admin_url) == 0:
        assert sent < 5 * MAX_LINES, f"no line dropped after {sent} requests"
        assert _spike(host, port, step) == [202] * step
        sent += step
        assert _healthy(admin_url)
    # Now the pipe is full and lines are being dropped: the proxy goes on regardless.
    before = _dropped(admin_url)
    for _ in range(AFTER_DROPS // 1_000):
        assert _spike(host, port, 1_000) == [202] * 1_000
        assert _healthy(admin_url)
    after = _dropped(admin_url)
    assert after >= before + AFTER_DROPS  # one access-log line per request, all dropped
    process.terminate()  # SIGTERM, by its PID
    assert process.wait(timeout=TIMEOUT) == 0
