"""The backend fails: down for a while, or slower than the dispatch deadline.

Real uvicorn servers on 127.0.0.1, the embedded engine on a real SQLite file. A backend
that answers 500 to each task's first attempts is covered by
tests/engines/local/test_e2e.py (test_backend_errors_then_recovery); here nothing listens
at all, then the backend comes up on the same port, and here a backend hangs past the
15 s minimum dispatch deadline (Cloud Tasks' own floor, so the test takes ~17 s).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from proxy.config.settings import RetrySettings
from tests.faults.common import TIMEOUT, earliest_start, metric, most_attempts
from tests.support.backend import RecordingBackend
from tests.support.servers import free_port, run_proxy, serve_in_thread, wait_for
from tests.support.spike import local_settings


def test_backend_down_then_up_delivers_everything_on_schedule(tmp_path: Path) -> None:
    """With nothing listening at the target, attempts fail no faster than the backoff
    schedule allows; once the backend comes up on that port every task is delivered once,
    each attempt no earlier than the schedule says."""
    port = free_port()
    retry = {"min_backoff": 0.2, "max_backoff": 2, "max_doublings": 3}
    schedule = RetrySettings(min_backoff=0.2, max_backoff=2, max_doublings=3)
    settings = local_settings(
        tmp_path, f"http://127.0.0.1:{port}", rate=100, concurrency=10, retry=retry
    )
    bodies = [b"down-%02d" % n for n in range(20)]
    backend = RecordingBackend()
    with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as client:
        started = time.monotonic()
        for body in bodies:
            assert client.post(proxy.url + "/jobs", content=body).status_code == 202
        failed = lambda: metric(  # noqa: E731
            proxy.admin_url, "ingest_proxy_dispatches_total", status_class="error"
        )
        wait_for(lambda: failed() >= 3 * len(bodies), TIMEOUT, interval=0.1)
        seen = failed()
        elapsed = time.monotonic() - started
        # Lower bound on the spacing: no task can have tried more often than this.
        assert seen <= len(bodies) * most_attempts(schedule, elapsed), (seen, elapsed)
        assert backend.received == []
        with serve_in_thread(backend, port=port, lifespan="off"):
            received = backend.wait_for_count(len(bodies), TIMEOUT)
            wait_for(
                lambda: metric(proxy.admin_url, "ingest_proxy_queue_depth", queue="q") == 0,
                TIMEOUT,
            )
    assert Counter(r.body for r in received) == Counter(bodies)  # each once
    for request in received:
        retries = int(request.header("x-cloudtasks-taskretrycount") or 0)
        assert retries >= 3
        assert request.at - started >= earliest_start(schedule, retries) - 0.01
        assert request.header("x-cloudtasks-taskexecutioncount") == "0"  # never answered
        assert request.header("x-cloudtasks-taskpreviousresponse") is None


@dataclass
class HangingBackend:
    """ASGI backend that never answers the first ``hang`` requests (it waits until the
    client gives up and disconnects, at most ``limit`` seconds) and answers 200 to the
    others. Counts requests in flight as the client sees them."""

    hang: int
    limit: float = 60.0
    received: list[tuple[str, int, float]] = field(default_factory=list)  # name, retry, at
    outcomes: list[str] = field(default_factory=list)  # of the hung requests
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        while (await receive()).get("more_body"):
            pass
        with self._lock:
            self.received.append(
                (
                    headers[b"x-cloudtasks-taskname"].decode(),
                    int(headers[b"x-cloudtasks-taskretrycount"]),
                    time.monotonic(),
                )
            )
            hangs = len(self.received) <= self.hang
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if hangs:
                try:
                    async with asyncio.timeout(self.limit):
                        message = await receive()  # returns when the client disconnects
                    self.outcomes.append(message["type"])
                except TimeoutError:
                    self.outcomes.append("still waiting")
                return
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            with self._lock:
                self.in_flight -= 1


def test_backend_slower_than_the_deadline_is_a_failed_attempt(tmp_path: Path) -> None:
    """Attempts that get no answer within the 15 s dispatch deadline are abandoned,
    counted as timeouts and retried after the backoff; meanwhile the concurrency cap of 2
    holds (the other tasks wait), and in the end every task is delivered."""
    backend = HangingBackend(hang=2)
    with serve_in_thread(backend, lifespan="off") as url:
        settings = local_settings(
            tmp_path,
            url,
            rate=50,
            concurrency=2,
            dispatch_deadline="15s",
            retry={"min_backoff": 0.5},
        )
        with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as client:
            tasks = [client.post(proxy.url + "/slow", content=b"%d" % n) for n in range(4)]
            assert [r.status_code for r in tasks] == [202] * 4
            wait_for(lambda: len(backend.received) >= 2, TIMEOUT)
            time.sleep(3.0)  # the cap is full of hung attempts: nothing else may start
            assert len(backend.received) == 2
            wait_for(lambda: len(backend.received) >= 6, 15 + TIMEOUT, interval=0.1)
            wait_for(
                lambda: metric(proxy.admin_url, "ingest_proxy_queue_depth", queue="q") == 0,
                TIMEOUT,
            )
            timeouts = metric(
                proxy.admin_url, "ingest_proxy_dispatches_total", status_class="timeout"
            )
    assert timeouts == 2
    assert backend.outcomes == ["http.disconnect"] * 2  # the proxy gave up, not the backend
    assert backend.max_in_flight <= 2
    hung = {name: at for name, _, at in backend.received[:2]}
    retried = {name: (retry, at) for name, retry, at in backend.received[2:] if name in hung}
    assert set(retried) == set(hung)
    for name, (retry, at) in retried.items():
        assert retry == 1
        assert at - hung[name] >= 15.0 + 0.5 - 0.2  # deadline, then the first backoff
    names = {json_task(r) for r in tasks}
    assert {name for name, _, _ in backend.received} == names
    assert len(backend.received) == 6  # 2 hung + their 2 retries + 2 others


def json_task(response: httpx.Response) -> str:
    task: str = response.json()["task"]
    return task
