"""The Cloud Tasks engine's spool with real processes: ``python -m proxy serve`` on the
Cloud Tasks engine, ``ingest-proxy cloudtasks-server`` as Cloud Tasks, a recording
backend. Cloud Tasks stops mid-spike, the proxy is killed with tasks in the spool, an
answer is lost after the task landed; and, in-process (the test reaches the spool's file),
a full spool and a full disk."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
from google.cloud.tasks_v2 import RateLimits

from proxy.config.loading import settings_from_dict
from proxy.engines.cloudtasks.engine import CloudTasksEngine
from tests.engines.local.test_crash import serve as serve_proxy
from tests.support.backend import RecordingBackend
from tests.support.cloudtasks_server import ServerProcess, sync_client
from tests.support.emulator import LOCATION, PROJECT, queue_path
from tests.support.fake_cloudtasks import FakeCloudTasks
from tests.support.lossy_grpc import run_lossy_proxy
from tests.support.servers import run_proxy, wait_for
from tests.support.spike import spike

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60.0  # seconds for any one wait: generous, the machine is shared
ADMIN_TOKEN = "spool-admin-token-0123456789"


@contextmanager
def serve(
    spool: Path, cloudtasks: str, target: str, queue: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """``python -m proxy serve`` on the Cloud Tasks engine with a spool (test_crash.py's
    launcher: free ports, ready once /readyz answers 200, killed on exit)."""
    config = spool.with_suffix(".toml")
    config.write_text(f'[server]\nadmin_token = "{ADMIN_TOKEN}"\n')
    with serve_proxy(
        spool.with_suffix(".unused.db"), target, "--config", str(config),
        "--engine", "cloudtasks", "--project", PROJECT, "--location", LOCATION,
        "--emulator-host", cloudtasks, "--queue", queue, "--spool", str(spool),
    ) as running:  # fmt: skip
        yield running


def sample(admin_url: str, name: str) -> float:
    """A sample without labels on the proxy's /metrics (0 when it cannot be read)."""
    try:
        text = httpx.get(admin_url + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return -1.0
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


def labelled_sum(admin_url: str, name: str) -> float:
    """The sum of every labelled sample of ``name`` on /metrics."""
    text = httpx.get(admin_url + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(rf"^{name}{{[^}}]*}} (\S+)$", text, re.M))


def create_queue(host: str, queue: str, *, paused: bool = False) -> None:
    client, channel = sync_client(host)
    try:
        limits = RateLimits(max_dispatches_per_second=500)
        client.create_queue(
            parent=f"projects/{PROJECT}/locations/{LOCATION}",
            queue={"name": queue_path(queue), "rate_limits": limits},
        )
        if paused:
            client.pause_queue(name=queue_path(queue))
    finally:
        channel.close()


def task_names(host: str, queue: str) -> list[str]:
    """The short names of every task cloudtasks-server holds in ``queue`` (ListTasks)."""
    client, channel = sync_client(host)
    try:
        return [t.name.rsplit("/", 1)[1] for t in client.list_tasks(parent=queue_path(queue))]
    finally:
        channel.close()


def resume(host: str, queue: str) -> None:
    client, channel = sync_client(host)
    try:
        client.resume_queue(name=queue_path(queue))
    finally:
        channel.close()


def delivered_names(backend: RecordingBackend) -> Counter[str]:
    return Counter(r.header("x-cloudtasks-taskname") or "" for r in backend.received)


def test_cloud_tasks_stopped_mid_spike(tmp_path: Path, backend: RecordingBackend) -> None:
    """Cloud Tasks stops in the middle of a 400-request spike: every request gets 202.
    Back up, every acknowledged task is in Cloud Tasks exactly once (ListTasks on a
    paused queue), the spool ends empty, and each is delivered once."""
    server = ServerProcess(tmp_path / "ct.db")
    server.start()
    try:
        create_queue(server.host, "spike", paused=True)
        with serve(tmp_path / "spool.db", server.host, backend.url, "spike") as (_, url, admin):
            bodies = [b"spike-%04d" % n for n in range(400)]
            out: list[object] = []
            thread = threading.Thread(target=lambda: out.extend(spike(url + "/in", bodies)))
            thread.start()
            wait_for(lambda: len(task_names(server.host, "spike")) >= 50, TIMEOUT)
            server.stop()  # mid-spike
            thread.join(TIMEOUT * 3)
            assert not thread.is_alive()
            statuses = Counter(getattr(r, "status_code", repr(r)) for r in out)
            assert statuses == {202: 400}
            acked = [r.json()["task"] for r in out]  # type: ignore[attr-defined]
            assert sample(admin, "ingest_proxy_spool_tasks") > 0
            listing = httpx.get(
                admin + "/spool?limit=5",
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=10,
            ).json()
            assert listing["depth"] > 0
            assert len(listing["tasks"]) == min(5, listing["depth"])
            server.start()
            wait_for(lambda: sample(admin, "ingest_proxy_spool_tasks") == 0, TIMEOUT * 2)
            names = task_names(server.host, "spike")
            assert sorted(names) == sorted(acked)
            resume(server.host, "spike")
            backend.wait_for_count(400, TIMEOUT * 2)
            spooled = labelled_sum(admin, "ingest_proxy_spooled_total")
            assert spooled > 0
            assert labelled_sum(admin, "ingest_proxy_spool_forwarded_total") == spooled
    finally:
        server.stop()
    counts = delivered_names(backend)
    assert set(counts) == set(acked)
    assert set(counts.values()) == {1}


def test_kill_9_with_tasks_in_the_spool(tmp_path: Path, backend: RecordingBackend) -> None:
    """Tasks sit in the spool (Cloud Tasks down) when the proxy is killed with SIGKILL;
    restarted on the same file with Cloud Tasks back, every one reaches the backend."""
    server = ServerProcess(tmp_path / "ct.db")
    server.start()
    spool = tmp_path / "spool.db"
    try:
        create_queue(server.host, "crash")
        with serve(spool, server.host, backend.url, "crash") as (process, url, admin):
            server.stop()
            answers = [httpx.post(f"{url}/k", content=b"k-%d" % n, timeout=30) for n in range(20)]
            assert [a.status_code for a in answers] == [202] * 20
            acked = {a.json()["task"] for a in answers}
            assert sample(admin, "ingest_proxy_spool_tasks") == 20
            process.kill()  # SIGKILL: no shutdown, no flush
            process.wait(30)
        server.start()
        with serve(spool, server.host, backend.url, "crash") as (_, _, admin):
            backend.wait_for_count(20, TIMEOUT)
            wait_for(lambda: sample(admin, "ingest_proxy_spool_tasks") == 0, TIMEOUT)
    finally:
        server.stop()
    counts = delivered_names(backend)
    assert set(counts) == acked
    assert set(counts.values()) == {1}


def test_a_lost_answer_is_not_a_second_task(tmp_path: Path, backend: RecordingBackend) -> None:
    """CreateTask lands in Cloud Tasks but every answer is lost (a gRPC proxy that aborts
    with UNAVAILABLE after the real answer came back): the request is spooled, its copy
    meets ALREADY_EXISTS, and the backend gets the task once."""
    server = ServerProcess(tmp_path / "ct.db")
    server.start()
    try:
        create_queue(server.host, "lossy")
        with (
            run_lossy_proxy(server.host) as lossy,
            serve(tmp_path / "spool.db", lossy.host, backend.url, "lossy") as (_, url, admin),
        ):
            lossy.losing = True
            answer = httpx.post(f"{url}/once", content=b"once", timeout=30)
            assert answer.status_code == 202
            assert lossy.lost >= 1
            assert sample(admin, "ingest_proxy_spool_tasks") == 1
            lossy.losing = False
            wait_for(lambda: sample(admin, "ingest_proxy_spool_tasks") == 0, TIMEOUT)
            backend.wait_for_count(1, TIMEOUT)
            text = httpx.get(admin + "/metrics", timeout=5).text
            assert 'ingest_proxy_spool_forwarded_total{outcome="already_existed"} 1.0' in text
            wait_for(lambda: task_names(server.host, "lossy") == [], TIMEOUT)
    finally:
        server.stop()
    assert delivered_names(backend) == {answer.json()["task"]: 1}


def test_full_spool_and_full_disk_answer_503_never_a_false_202(
    tmp_path: Path, fake_cloudtasks: FakeCloudTasks
) -> None:
    """Cloud Tasks down: past spool_max_tasks a request gets 503 with Retry-After; with
    the spool's disk full (SQLite max_page_count) 503 too. Back up, Cloud Tasks holds
    exactly the tasks that got a 202."""
    settings = settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [{"name": "orders", "target": "http://127.0.0.1:9/"}],
            "cloudtasks": {
                "project": PROJECT,
                "location": LOCATION,
                "emulator_host": fake_cloudtasks.host,
                "enqueue_deadline": "0.3s",
                "spool": str(tmp_path / "spool.db"),
                "spool_max_tasks": 3,
                "spool_breaker_open": "0.5s",
            },
        }
    )
    fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
    with run_proxy(settings) as proxy, httpx.Client(timeout=30) as client:
        engine = proxy.app.state.runtime.engine
        assert isinstance(engine, CloudTasksEngine)
        assert engine.spool is not None
        answers = [client.post(f"{proxy.url}/o", content=b"%d" % n) for n in range(5)]
        assert [a.status_code for a in answers] == [202, 202, 202, 503, 503]
        assert answers[3].json()["error"] == "engine_unavailable"
        assert "spool is full" in answers[3].json()["detail"]
        assert int(answers[3].headers["retry-after"]) >= 1
        acked = {a.json()["task"] for a in answers[:3]}

        def cap(conn: sqlite3.Connection) -> None:
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count={pages}")

        fake_cloudtasks.outage(None)
        wait_for(lambda: engine.spool is not None and engine.spool.depth() == 0, TIMEOUT)
        asyncio.run(_on_writer(engine, cap))
        fake_cloudtasks.outage(grpc.StatusCode.UNAVAILABLE)
        full = client.post(f"{proxy.url}/o", content=b"x" * 60_000)
        assert full.status_code == 503
        assert "full" in full.json()["detail"]
        assert "retry-after" in full.headers
        fake_cloudtasks.outage(None)
    created = {name.rsplit("/", 1)[1] for name in fake_cloudtasks.tasks}
    assert created == acked


async def _on_writer(engine: CloudTasksEngine, fn: object) -> None:
    assert engine.spool is not None
    await engine.spool._file.writer.submit(fn)  # type: ignore[arg-type]
