"""Durable ingest throughput of the embedded engine against a bare Starlette app, in one run.

    .venv/bin/python -m bench.ingest_local [--requests 20000] [--rounds 5] [--skip-million]

The server under test runs on CPU 0 (``taskset``), this load generator on CPU 1; 64
keep-alive connections send ~1 KiB POST bodies (bench/loadgen.py). Measured, with
``synchronous=FULL``:

1. per round: the bare Starlette app (bench/bare_app.py), the proxy's ingress over a no-op
   engine, and ``python -m proxy serve`` (embedded engine); the median of the per-round
   proxy/bare ratios (goal >= 85 %) and CPU microseconds per request by thread;
2. the proxy with a simulated slow disk: the bench-only env var
   ``INGEST_PROXY_BENCH_ONLY_COMMIT_DELAY_MS=5`` adds 5 ms to every durable commit;
3. p50/p99 latency of the proxy in open loop at half its measured throughput;
4. the proxy on a database prefilled with 1,000,000 tasks against an empty database, in
   alternating rounds (goal >= 90 % of the empty-queue throughput), and its RSS in both.

The proxy delivers to a closed port at 1 task/s, so delivery costs next to nothing.
Everything is bounded in count and time, and traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import httpx
import uvicorn

from bench.loadgen import LoadResult, run_load
from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from proxy.engines.local.store.store import Store
from proxy.engines.local.store.writer import BENCH_COMMIT_DELAY_ENV
from proxy.envelope import EnqueueResult, Envelope
from proxy.server import ingress_options
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"event": "click", "pad": "' + b"x" * 990 + b'"}'
HEADERS = {"Content-Type": "application/json"}
CONNECTIONS = 64
DEAD_TARGET = "http://127.0.0.1:9"
START_TIMEOUT = 60.0


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def server(
    command: list[str],
    port: int,
    env: dict[str, str] | None = None,
    *,
    ready_url: str | None = None,
    stderr: IO[bytes] | None = None,
) -> Iterator[int]:
    """Run ``command`` on CPU 0 until it answers on ``port`` (or ``ready_url`` answers
    2xx); yield its pid. ``stderr``: where its log goes (this process's stderr if omitted)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    full_env.update(env or {})
    process = subprocess.Popen(
        ["taskset", "-c", "0", *command], cwd=ROOT, env=full_env, stderr=stderr
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command} exited with {process.returncode}")
            try:
                answer = httpx.get(ready_url or f"http://127.0.0.1:{port}/", timeout=1)
                if ready_url is None or answer.status_code < 300:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command} did not start") from None
            time.sleep(0.1)
        yield process.pid
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bare(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.bare_app", "--port", str(port)]


def proxy(port: int, config: Path) -> list[str]:
    admin = free_port()
    return [
        sys.executable, "-m", "proxy", "serve", "--config", str(config),
        "--port", str(port), "--admin-port", str(admin), "--log-level", "warning",
    ]  # fmt: skip


def write_config(directory: Path, name: str, synchronous: str = "FULL") -> Path:
    db = directory / f"{name}.db"
    config = directory / f"{name}.toml"
    config.write_text(
        f'[[queues]]\nname = "default"\ntarget = "{DEAD_TARGET}"\nrate = 1\n'
        "max_backlog_tasks = 5000000\n"
        f'[local]\ndb = "{db}"\nsynchronous = "{synchronous}"\n'
    )
    return config


def load(
    port: int, requests: int, rate: float | None = None, duration: float | None = None
) -> LoadResult:
    return asyncio.run(
        run_load(
            f"http://127.0.0.1:{port}/ingest/events",
            connections=CONNECTIONS,
            requests=requests,
            duration=duration,
            rate=rate,
            body=BODY,
            headers=HEADERS,
        )
    )


@dataclass
class Run:
    """One measured closed-loop run: answers/s, RSS afterwards (KiB), and CPU per request in
    microseconds of the event-loop thread and of every other thread (the SQLite writer)."""

    rps: float
    rss_kib: int
    loop_us: float
    other_us: float


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(main thread, other threads) user+system clock ticks of ``pid``."""
    main = other = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        if int(tid) == pid:
            main += ticks
        else:
            other += ticks
    return main, other


def measure(
    command: list[str],
    port: int,
    requests: int,
    env: dict[str, str] | None = None,
    stderr: IO[bytes] | None = None,
) -> Run:
    """Warm up, then one measured closed-loop run of ``requests`` (``stderr``: where the
    server's log goes, as :func:`server` takes it)."""
    with server(command, port, env, stderr=stderr) as pid:
        load(port, min(3000, requests))
        before = cpu_ticks(pid)
        result = load(port, requests)
        after = cpu_ticks(pid)
        check(result, 202)
        per_request = 1e6 / os.sysconf("SC_CLK_TCK") / result.requests
        return Run(
            result.throughput,
            rss_kib(pid),
            (after[0] - before[0]) * per_request,
            (after[1] - before[1]) * per_request,
        )


class NoopEngine:
    """Answers every enqueue at once without storing anything: isolates the ingress cost."""

    name = "noop"

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass

    async def check_ready(self) -> None:
        pass

    async def enqueue(self, envelope: Envelope) -> EnqueueResult:
        return EnqueueResult(envelope.id, envelope.queue)

    def enqueue_nowait(self, envelope: Envelope) -> asyncio.Future[EnqueueResult]:
        """The ingress's callback path, as the embedded engine offers it."""
        future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        future.set_result(EnqueueResult(envelope.id, envelope.queue))
        return future


def serve_noop_ingress(port: int) -> None:
    """The proxy's ingress (same app and uvicorn options) over :class:`NoopEngine`."""
    settings = settings_from_dict({"queues": [{"name": "default", "target": DEAD_TARGET}]})
    app = create_app(settings, engine=NoopEngine())
    options = ingress_options(settings) | {"log_level": "warning", "log_config": None}
    uvicorn.run(app, host="127.0.0.1", port=port, **options)


def noop(port: int) -> list[str]:
    return [sys.executable, "-m", "bench.ingest_local", "--serve-noop-ingress", str(port)]


def check(result: LoadResult, status: int) -> None:
    if result.errors or set(result.statuses) != {status}:
        raise RuntimeError(f"unexpected answers: {result.summary()}")


def prefill(db: Path, count: int) -> float:
    """Put ``count`` 1 KiB tasks in the queue ``default`` of ``db``; seconds taken."""
    started = time.monotonic()
    store = Store(str(db), synchronous="NORMAL", clock=time.time)
    store.open(["default"])

    async def fill() -> None:
        now = time.time()
        chunk = 20_000
        for start in range(0, count, chunk):
            envelopes = [
                Envelope(
                    id=os.urandom(16).hex(),
                    queue="default",
                    method="POST",
                    path="/ingest/events",
                    query="",
                    headers=(("content-type", "application/json"),),
                    body=BODY,
                    received_at=now,
                    request_id=os.urandom(16).hex(),
                )
                for _ in range(min(chunk, count - start))
            ]
            await store.writer.submit(lambda conn, e=envelopes: store._insert(conn, e))  # type: ignore[misc]

    asyncio.run(fill())
    store.close()
    return time.monotonic() - started


def summary(runs: list[Run]) -> dict[str, object]:
    return {
        "rps": [round(r.rps) for r in runs],
        "median_rps": round(statistics.median(r.rps for r in runs)),
        "loop_us": round(statistics.median(r.loop_us for r in runs), 1),
        "other_threads_us": round(statistics.median(r.other_us for r in runs), 1),
        "rss_mib": round(runs[-1].rss_kib / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backlog", type=int, default=1_000_000)
    parser.add_argument("--skip-million", action="store_true")
    parser.add_argument("--serve-noop-ingress", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_noop_ingress:
        serve_noop_ingress(args.serve_noop_ingress)
        return
    os.sched_setaffinity(0, {1})
    report: dict[str, object] = {"requests": args.requests, "connections": CONNECTIONS}
    with tempfile.TemporaryDirectory(prefix="bench-local-") as tmp:
        directory = Path(tmp)
        runs: dict[str, list[Run]] = {"bare": [], "ingress_noop_engine": [], "proxy": []}
        ratios = []
        for round_ in range(args.rounds):
            port = free_port()
            runs["bare"].append(measure(bare(port), port, args.requests))
            port = free_port()
            runs["ingress_noop_engine"].append(measure(noop(port), port, args.requests))
            port = free_port()
            config = write_config(directory, f"empty{round_}")
            runs["proxy"].append(measure(proxy(port, config), port, args.requests))
            ratios.append(runs["proxy"][-1].rps / runs["bare"][-1].rps)
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{k} {v[-1].rps:.0f}/s" for k, v in runs.items())
                + f", proxy/bare {ratios[-1]:.1%}",
                flush=True,
            )
        report |= {k: summary(v) for k, v in runs.items()}
        report["ratio_median_of_rounds"] = round(statistics.median(ratios), 3)
        report["ratios"] = [round(r, 3) for r in ratios]
        proxy_median = statistics.median(r.rps for r in runs["proxy"])
        for name, values in runs.items():
            print(f"{name}: {json.dumps(summary(values))}")
        print(f"proxy/bare: median of rounds {statistics.median(ratios):.1%}", flush=True)

        port = free_port()
        config = write_config(directory, "slowdisk")
        slow = measure(proxy(port, config), port, args.requests, {BENCH_COMMIT_DELAY_ENV: "5"})
        report["slow_fsync_5ms"] = asdict(slow)
        print(f"proxy with +5 ms per commit: {slow.rps:.0f}/s", flush=True)

        port = free_port()
        config = write_config(directory, "latency")
        with server(proxy(port, config), port):
            load(port, 3000)
            half = proxy_median / 2
            result = load(port, 1 << 30, rate=half, duration=10)
            check(result, 202)
        report["half_load"] = {"rate": round(half), **result.summary()}
        p50, p99 = result.percentile(50) * 1000, result.percentile(99) * 1000
        print(f"latency at {half:.0f}/s: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)

        if not args.skip_million:
            seconds = prefill(directory / "million.db", args.backlog)
            print(f"prefilled {args.backlog} tasks in {seconds:.0f}s", flush=True)
            empty: list[Run] = []
            full: list[Run] = []
            for round_ in range(args.rounds):
                port = free_port()
                config = write_config(directory, f"empty-again{round_}")
                empty.append(measure(proxy(port, config), port, args.requests))
                port = free_port()
                config = write_config(directory, "million")
                full.append(measure(proxy(port, config), port, args.requests))
                print(
                    f"round {round_ + 1}: empty {empty[-1].rps:.0f}/s,"
                    f" {args.backlog} queued {full[-1].rps:.0f}/s",
                    flush=True,
                )
            ratio = statistics.median(f.rps / e.rps for f, e in zip(full, empty, strict=True))
            report |= {
                "backlog": args.backlog,
                "backlog_empty": summary(empty),
                "backlog_full": summary(full),
                "backlog_ratio_median_of_rounds": round(ratio, 3),
                "db_mib": round((directory / "million.db").stat().st_size / 2**20),
            }
            print(
                f"with {args.backlog} queued: {ratio:.1%} of the empty-queue throughput;"
                f" RSS {full[-1].rss_kib / 1024:.0f} MiB"
                f" (empty queue: {empty[-1].rss_kib / 1024:.0f} MiB)",
                flush=True,
            )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
