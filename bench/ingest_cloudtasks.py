"""Ingest throughput of the Cloud Tasks engine against the emulator, beside the emulator's
raw async CreateTask rate, measured in one run.

    .venv/bin/python -m bench.ingest_cloudtasks [--connections 32] [--requests 5000] [--rounds 5]

Starts gcloud-tasks-emulator (its own venv, see tests/support/emulator.py) on a free port of
127.0.0.1 with two *paused* queues, so the emulator spends its time on CreateTask and not
on delivery. Then, ``--rounds`` times, alternating:

- raw: ``--connections`` concurrent coroutines calling ``CloudTasksAsyncClient.create_task``
  directly with the same task the engine builds (same URL, headers, 1 KiB body);
- proxy: ``python -m proxy serve --engine cloudtasks`` as a subprocess, loaded over HTTP/1.1
  keep-alive by bench/loadgen.py with the same concurrency and body.

Prints the median rate of each and the median of the per-round ratios proxy/raw (goal:
>= 0.80), as text and as one JSON line. Every run is bounded in count and time; traffic
stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from google.cloud.tasks_v2 import CloudTasksAsyncClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from bench.loadgen import run_load
from proxy.config.loading import settings_from_dict
from proxy.engines.cloudtasks.request import create_task_request, queue_targets
from proxy.envelope import Envelope
from tests.support.emulator import LOCATION, PROJECT, Emulator
from tests.support.servers import free_port

MAX_SECONDS = 120.0  # per measured run
START_TIMEOUT = 30.0
TARGET = "http://127.0.0.1:9"  # never contacted: the queues are paused
PATH = "/ingest/events"


@dataclass
class Run:
    """One measured run: accepted tasks, failures, seconds, latency percentiles (ms), and
    CPU microseconds per task of the emulator, the proxy and this process (the raw client
    or the load generator)."""

    kind: str
    ok: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float
    cpu_us: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


async def raw_run(host: str, queue: str, connections: int, requests: int, body: bytes) -> Run:
    """``requests`` CreateTask calls from ``connections`` coroutines on one async client."""
    channel = grpc.aio.insecure_channel(host)
    client = CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    settings = settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [{"name": queue, "target": TARGET}],
            "cloudtasks": {"project": PROJECT, "location": LOCATION, "emulator_host": host},
        }
    )
    target = queue_targets(settings)[queue]
    headers = (("content-type", "application/octet-stream"), ("x-forwarded-for", "127.0.0.1"))
    budget = requests
    ok = failed = 0
    latencies: list[float] = []
    stop_at = time.perf_counter() + MAX_SECONDS

    async def worker() -> None:
        nonlocal budget, ok, failed
        while budget > 0 and time.perf_counter() < stop_at:
            budget -= 1
            envelope = Envelope(
                id=uuid.uuid4().hex,
                queue=queue,
                method="POST",
                path=PATH,
                query="",
                headers=headers,
                body=body,
                received_at=time.time(),
            )
            started = time.perf_counter()
            try:
                request = create_task_request(target, envelope)
                await client.create_task(request=request, timeout=10.0, retry=None)
            except Exception:
                failed += 1
                continue
            latencies.append(time.perf_counter() - started)
            ok += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - started
    await channel.close()
    return Run("raw", ok, failed, seconds, *percentiles(latencies))


async def proxy_run(url: str, connections: int, requests: int, body: bytes) -> Run:
    """``requests`` POSTs through the proxy with bench/loadgen.py."""
    result = await run_load(
        url,
        connections=connections,
        requests=requests,
        duration=MAX_SECONDS,
        body=body,
        headers={"Content-Type": "application/octet-stream"},
    )
    ok = result.statuses.get(202, 0)
    failed = result.requests - ok + result.errors
    return Run("proxy", ok, failed, result.elapsed, *percentiles(result.latencies))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    if not latencies:
        return 0.0, 0.0
    ordered = sorted(latencies)

    def at(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)

    return at(0.50), at(0.99)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` (this process when ``None``)."""
    if pid is None:
        return time.process_time()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measured(run: Awaitable[Run], processes: dict[str, int | None]) -> Run:
    """Await ``run`` and attach the CPU each of ``processes`` spent per accepted task."""
    before = {name: cpu_seconds(pid) for name, pid in processes.items()}
    result = await run
    for name, pid in processes.items():
        spent = cpu_seconds(pid) - before[name]
        result.cpu_us[name] = round(spent / result.ok * 1e6) if result.ok else 0.0
    return result


def start_proxy(emulator: Emulator, queue: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m proxy serve --engine cloudtasks`` on free ports; wait for /readyz."""
    port, admin = free_port(), free_port()
    env = {**os.environ, "CLOUD_TASKS_EMULATOR_HOST": emulator.host, "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, "-m", "proxy", "serve", "--engine", "cloudtasks",
        "--target", TARGET, "--queue", queue, "--project", PROJECT, "--location", LOCATION,
        "--host", "127.0.0.1", "--port", str(port), "--admin-port", str(admin),
        "--log-level", "warning",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with status {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}{PATH}"
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError("the proxy did not become ready")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


async def measure(args: argparse.Namespace) -> dict[str, object]:
    body = b"x" * args.body_bytes
    emulator = Emulator()
    emulator.start()
    proxy: subprocess.Popen[bytes] | None = None
    try:
        suffix = uuid.uuid4().hex[:8]
        raw_queue, proxy_queue = f"bench-raw-{suffix}", f"bench-proxy-{suffix}"
        for queue in (raw_queue, proxy_queue):
            emulator.create_queue(queue)
            emulator.pause_queue(queue)
        proxy, url = start_proxy(emulator, proxy_queue)
        warm = min(200, args.requests)
        await raw_run(emulator.host, raw_queue, args.connections, warm, body)
        await proxy_run(url, args.connections, warm, body)
        runs: list[Run] = []
        emulator_pid = emulator.pid
        for _ in range(args.rounds):
            direct = raw_run(emulator.host, raw_queue, args.connections, args.requests, body)
            runs.append(await measured(direct, {"emulator": emulator_pid, "client": None}))
            loaded = proxy_run(url, args.connections, args.requests, body)
            runs.append(
                await measured(
                    loaded, {"emulator": emulator_pid, "proxy": proxy.pid, "loadgen": None}
                )
            )
        raw = statistics.median(r.rate for r in runs if r.kind == "raw")
        via_proxy = statistics.median(r.rate for r in runs if r.kind == "proxy")
        # Each proxy run is compared with the raw run just before it, so load from other
        # processes on the machine weighs on both sides of each ratio alike.
        pairs = [runs[i + 1].rate / runs[i].rate for i in range(0, len(runs), 2) if runs[i].rate]
        return {
            "connections": args.connections,
            "requests_per_run": args.requests,
            "rounds": args.rounds,
            "body_bytes": args.body_bytes,
            "raw_createtask_per_s": round(raw, 1),
            "proxy_ingest_per_s": round(via_proxy, 1),
            "ratio": round(statistics.median(pairs), 3) if pairs else None,
            "pair_ratios": [round(r, 3) for r in pairs],
            "runs": [
                {**r.__dict__, "rate": round(r.rate, 1), "seconds": round(r.seconds, 3)}
                for r in runs
            ],
        }
    finally:
        if proxy is not None:
            stop(proxy)
        emulator.stop()


def main() -> None:
    """Run the benchmark and print the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--requests", type=int, default=5000, help="per run (max 100000)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--body-bytes", type=int, default=1024)
    args = parser.parse_args()
    args.requests = min(args.requests, 100_000)
    args.rounds = max(1, min(args.rounds, 10))
    report = asyncio.run(measure(args))
    for run in report["runs"]:  # type: ignore[attr-defined]
        print(
            f"{run['kind']:>5}: {run['rate']:8.1f}/s  ok={run['ok']} failed={run['failed']} "
            f"p50={run['p50_ms']}ms p99={run['p99_ms']}ms cpu_us/task={run['cpu_us']}"
        )
    print(
        f"raw CreateTask {report['raw_createtask_per_s']}/s, through the proxy "
        f"{report['proxy_ingest_per_s']}/s (medians); ratio {report['ratio']} "
        f"(median of the per-round ratios {report['pair_ratios']})"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
