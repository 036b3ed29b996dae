"""The embedded engine through the whole proxy: real uvicorn, real SQLite, real backend."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx

from proxy.engines.local.engine import LocalEngine
from tests.support.backend import Received, RecordingBackend
from tests.support.servers import RunningProxy, free_port, run_proxy, wait_for
from tests.support.spike import accepted, local_settings, spike


def engine_of(proxy: RunningProxy) -> LocalEngine:
    engine = proxy.app.state.runtime.engine
    assert isinstance(engine, LocalEngine)
    return engine


def metric(proxy: RunningProxy, name: str) -> float:
    """The value of the sample ``name{queue="q"}`` on the admin /metrics page."""
    text = httpx.get(proxy.admin_url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + '{queue="q"}'):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def by_body(received: list[Received]) -> dict[bytes, list[Received]]:
    attempts: dict[bytes, list[Received]] = defaultdict(list)
    for request in received:
        attempts[request.body].append(request)
    return attempts


def test_spike_is_smoothed_to_rate_and_concurrency(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """300 requests at rate 20 / concurrency 4: all 202 fast, all delivered intact at the
    rate (burst 4), never more than 4 at once."""
    backend.delay = 0.15
    settings = local_settings(tmp_path, backend.url + "/api", rate=20, concurrency=4)
    bodies = [json.dumps({"n": n, "pad": "x" * 200}).encode() for n in range(300)]
    with run_proxy(settings) as proxy:
        started = time.monotonic()
        results = spike(proxy.url + "/orders?src=test", bodies)
        ingest = time.monotonic() - started
        assert [getattr(r, "status_code", r) for r in results] == [202] * 300
        received = backend.wait_for_count(300, timeout=90)
        assert metric(proxy, "ingest_proxy_dispatch_rate") == 20
    assert ingest < 296 / 20 * 0.5  # accepted well before it could be delivered
    assert sorted(r.body for r in received) == sorted(bodies)
    assert backend.max_in_flight <= 4
    span = received[-1].at - received[0].at
    assert span >= (300 - 4) / 20 * 0.8
    first = received[0]
    assert (first.method, first.path, first.query) == ("POST", "/api/orders", "src=test")
    assert first.header("user-agent") == "Google-Cloud-Tasks"
    assert first.header("x-cloudtasks-queuename") == "q"
    assert first.header("x-cloudtasks-taskretrycount") == "0"
    task_ids = {json.loads(r.text)["task"] for r in results if isinstance(r, httpx.Response)}
    assert {r.header("x-cloudtasks-taskname") for r in received} == task_ids


def test_backend_errors_then_recovery(tmp_path: Path, backend: RecordingBackend) -> None:
    """A backend that answers 500 to each task's first three attempts gets every task once
    it recovers; retries are spaced at least by the schedule (0.2, 0.4, 0.8 s)."""
    seen: Counter[bytes] = Counter()
    lock = threading.Lock()

    def down_then_up(request: Received) -> int:
        with lock:
            seen[request.body] += 1
            return 500 if seen[request.body] <= 3 else 200  # down for each task's 3 tries

    backend.responder = down_then_up
    settings = local_settings(
        tmp_path,
        backend.url,
        rate=100,
        retry={"min_backoff": 0.2, "max_backoff": 5, "max_doublings": 3},
    )
    bodies = [b"task %d" % n for n in range(20)]
    with run_proxy(settings) as proxy:
        assert accepted(bodies, spike(proxy.url + "/x", bodies)) == set(bodies)
        wait_for(
            lambda: len(backend.received) >= 4 * len(bodies),
            timeout=60,
            message="not every task was delivered after the backend recovered",
        )
        wait_for(  # completions are written in gathered batches, within a second
            lambda: metric(proxy, "ingest_proxy_queue_depth") == 0,
            timeout=10,
            message="the delivered tasks did not leave the queue",
        )
    assert set(by_body(backend.received)) == set(bodies)
    for body, attempts in by_body(backend.received).items():
        assert len(attempts) == 4, body
        for k, (before, after) in enumerate(itertools.pairwise(attempts)):
            assert after.at - before.at >= 0.2 * 2**k - 0.01, (body, k)
            assert after.header("x-cloudtasks-taskretrycount") == str(k + 1)
            assert after.header("x-cloudtasks-taskpreviousresponse") == "500"
        assert attempts[-1].header("x-cloudtasks-taskexecutioncount") == "0"  # 5xx only


def test_retry_after_is_honoured(tmp_path: Path, backend: RecordingBackend) -> None:
    """429 with Retry-After: 3 means the next attempt comes no sooner than 3 s later, and
    the queue's dispatch rate is lowered meanwhile."""
    backend.responder = lambda r: (429, {"retry-after": "3"}) if len(backend.received) == 0 else 200
    settings = local_settings(tmp_path, backend.url, rate=10, retry={"min_backoff": 0.1})
    with run_proxy(settings) as proxy:
        assert httpx.post(proxy.url + "/r", content=b"once", timeout=10).status_code == 202
        backend.wait_for_count(1, timeout=10)
        wait_for(lambda: metric(proxy, "ingest_proxy_dispatch_rate") == 5, timeout=10)
        first, second = backend.wait_for_count(2, timeout=20)
    # The proxy schedules by the wall clock, the backend stamps arrivals with the monotonic
    # one: 10 ms for the two to disagree (a 3.2 ms shortfall was seen once, on a VM), as
    # the backoff test above allows.
    assert second.at - first.at >= 3.0 - 0.01
    assert second.header("x-cloudtasks-taskpreviousresponse") == "429"


def test_exhausted_task_is_dead_lettered(tmp_path: Path, backend: RecordingBackend) -> None:
    """After max_attempts failures the task is in the dead-letter table, not lost."""
    backend.responder = lambda r: 500
    settings = local_settings(
        tmp_path, backend.url, rate=50, retry={"max_attempts": 3, "min_backoff": 0.1}
    )
    with run_proxy(settings) as proxy:
        engine = engine_of(proxy)
        answer = httpx.post(proxy.url + "/doomed?x=1", content=b"payload", timeout=10)
        task = answer.json()["task"]
        wait_for(lambda: engine.store.dead_letters("q") != [], timeout=20)
        (dead,) = engine.store.dead_letters("q")
        assert (dead.id, dead.path, dead.query, dead.attempts) == (task, "/doomed", "x=1", 3)
        assert (dead.last_status, dead.last_error) == (500, "ok")
        assert metric(proxy, "ingest_proxy_dead_letters") == 1
        assert metric(proxy, "ingest_proxy_queue_depth") == 0
    assert len(backend.received) == 3
    with sqlite3.connect(tmp_path / "tasks.db") as conn:
        assert conn.execute("SELECT body FROM dead_letters").fetchone()[0] == b"payload"


def test_backlog_bound_answers_429(tmp_path: Path) -> None:
    """Beyond max_backlog_tasks the proxy answers 429 with Retry-After and a JSON body."""
    dead_end = f"http://127.0.0.1:{free_port()}"  # nothing listens: tasks stay queued
    settings = local_settings(
        tmp_path, dead_end, rate=1, max_backlog_tasks=5, retry={"min_backoff": 60}
    )
    with run_proxy(settings) as proxy:
        answers = [httpx.post(proxy.url + "/", content=b"%d" % n, timeout=10) for n in range(8)]
        assert [a.status_code for a in answers] == [202] * 5 + [429] * 3
        refused = answers[-1]
        assert refused.json()["error"] == "backlog_full"
        assert "5 tasks" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) >= 1
        assert metric(proxy, "ingest_proxy_queue_depth") == 5
        # Each attempt fails at once (nothing listens): the tasks wait 60 s for their retry,
        # scheduled, so none is late.
        wait_for(lambda: metric(proxy, "ingest_proxy_scheduled_tasks") == 5, timeout=30)
        assert metric(proxy, "ingest_proxy_oldest_task_age_seconds") == 0.0


def test_full_disk_answers_503_and_never_a_false_202(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """When SQLite reports the disk full, requests get 503 (nothing stored) and readiness
    fails; afterwards every 202 is delivered and no 503 ever is."""
    settings = local_settings(tmp_path, backend.url, rate=100)
    with run_proxy(settings) as proxy:
        store = engine_of(proxy).store

        def on_writer(sql: str) -> None:
            async def run() -> None:
                await store.writer.submit(lambda conn: conn.execute(sql) and None)

            asyncio.run(run())

        post = lambda body: httpx.post(proxy.url + "/d", content=body, timeout=20)  # noqa: E731
        assert post(b"before").status_code == 202
        on_writer("PRAGMA max_page_count = 1")  # any growth of the file now fails: SQLITE_FULL
        refused = [post(b"lost %d " % n + b"x" * 50_000) for n in range(5)]
        assert {r.status_code for r in refused} == {503}
        assert refused[0].json()["error"] == "engine_unavailable"
        assert "full" in refused[0].json()["detail"]
        assert "retry-after" in refused[0].headers
        assert httpx.get(proxy.admin_url + "/readyz", timeout=10).status_code == 503
        on_writer("PRAGMA max_page_count = 1073741823")
        assert post(b"after").status_code == 202
        backend.wait_for_count(2, timeout=20)
        time.sleep(0.3)  # a false 202 would show up as a late delivery
    assert sorted(r.body for r in backend.received) == [b"after", b"before"]


def test_locked_database_answers_503(tmp_path: Path, backend: RecordingBackend) -> None:
    """Another process holding the write lock gives 503 after the busy timeout, not a hang;
    the request is not stored."""
    settings = local_settings(tmp_path, backend.url, rate=100)
    with run_proxy(settings) as proxy:
        other = sqlite3.connect(tmp_path / "tasks.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            locked = httpx.post(proxy.url + "/l", content=b"locked out", timeout=30)
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert locked.status_code == 503
        assert "locked" in locked.json()["detail"]
        assert httpx.post(proxy.url + "/l", content=b"let in", timeout=10).status_code == 202
        backend.wait_for_count(1, timeout=20)
        time.sleep(0.3)
    assert [r.body for r in backend.received] == [b"let in"]


def test_idempotency_key_delivers_once(tmp_path: Path, backend: RecordingBackend) -> None:
    """The same Idempotency-Key twice gives the same task id and one delivery."""
    settings = local_settings(tmp_path, backend.url, rate=100)
    with run_proxy(settings) as proxy:
        key = {"idempotency-key": "order-42"}
        first = httpx.post(proxy.url + "/o", content=b"a", headers=key, timeout=10)
        second = httpx.post(proxy.url + "/o", content=b"a", headers=key, timeout=10)
        assert first.status_code == second.status_code == 202
        assert first.json()["task"] == second.json()["task"]
        assert second.json().get("duplicate") is True
        backend.wait_for_count(1, timeout=10)
        time.sleep(0.3)
    assert len(backend.received) == 1


def test_delayed_task_waits(tmp_path: Path, backend: RecordingBackend) -> None:
    """X-Delay: 1 keeps the task until its ETA, and the ETA header says so."""
    settings = local_settings(tmp_path, backend.url, rate=100)
    with run_proxy(settings) as proxy:
        sent = time.time()
        answer = httpx.post(proxy.url + "/t", content=b"later", headers={"x-delay": "1"})
        assert answer.status_code == 202
        (got,) = backend.wait_for_count(1, timeout=10)
    eta = float(got.header("x-cloudtasks-tasketa") or 0)
    assert eta >= sent + 1 - 0.01
    assert time.time() >= eta


def test_admin_api_pauses_and_replays(tmp_path: Path, backend: RecordingBackend) -> None:
    """Through the admin listener (another event loop): pause holds deliveries while 202s go
    on, resume delivers, a dead letter is listed and replayed."""
    backend.responder = lambda r: 500 if r.body == b"bad" else 200
    settings = local_settings(
        tmp_path,
        backend.url,
        rate=100,
        retry={"max_attempts": 1},
        server={"admin_token": "s3cret-admin-token"},
    )
    auth = {"authorization": "Bearer s3cret-admin-token"}
    with run_proxy(settings) as proxy:
        admin = httpx.Client(base_url=proxy.admin_url, headers=auth, timeout=10)
        assert admin.post("/queues/q/pause").json()["state"] == "paused"
        assert httpx.post(proxy.url + "/p", content=b"held", timeout=10).status_code == 202
        time.sleep(0.5)
        assert backend.received == []
        (queue,) = admin.get("/queues").json()["queues"]
        assert (queue["state"], queue["tasks"]) == ("paused", 1)
        assert admin.post("/queues/q/resume").json()["state"] == "running"
        backend.wait_for_count(1, timeout=10)
        assert httpx.post(proxy.url + "/p", content=b"bad", timeout=10).status_code == 202
        wait_for(lambda: admin.get("/queues/q/dead-letters").json()["dead_letters"], timeout=10)
        (dead,) = admin.get("/queues/q/dead-letters").json()["dead_letters"]
        backend.responder = lambda r: 200
        assert admin.post(f"/queues/q/dead-letters/{dead['id']}/replay").is_success
        backend.wait_for_count(3, timeout=10)
        wait_for(lambda: metric(proxy, "ingest_proxy_queue_depth") == 0, timeout=10)
        assert metric(proxy, "ingest_proxy_dead_letters") == 0
    assert [r.body for r in backend.received] == [b"held", b"bad", b"bad"]
