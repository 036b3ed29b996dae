"""Dispatch rate accuracy of the embedded engine: does ``--rate 50`` give 50 per second?

    .venv/bin/python -m bench.dispatch_rate [--rate 50] [--seconds 60]

Starts a recording backend (uvicorn, in this process) and ``python -m proxy serve`` with
``--rate R --concurrency C`` (default 100) on a fresh SQLite file, queues
``R * seconds + 10 %`` tasks in one burst with bench/loadgen.py, then records when each
delivery reaches the backend.
The steady rate is measured after the initial token-bucket burst, over ``--seconds``
(goal: within +/-2 % of R). Bounded in time; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.loadgen import run_load
from proxy.limits import default_burst
from tests.support.backend import run_backend
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def steady_rate(times: list[float], burst: int, seconds: float) -> tuple[float, int]:
    """Deliveries per second over ``seconds`` after the first ``burst`` (the bucket's
    initial tokens), from sorted arrival times; and how many arrived in the first 50 ms."""
    start = times[burst]  # first delivery paced by the refill rate
    window = [t for t in times[burst:] if t <= start + seconds]
    measured = (len(window) - 1) / (window[-1] - start)
    early = sum(1 for t in times if t <= times[0] + 0.05)
    return measured, early


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    burst = default_burst(args.rate)
    tasks = int(args.rate * args.seconds * 1.1) + burst
    port, admin = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    with tempfile.TemporaryDirectory(prefix="bench-rate-") as tmp, run_backend() as backend:
        command = [
            sys.executable, "-m", "proxy", "serve", "--target", backend.url,
            "--rate", str(args.rate), "--concurrency", str(args.concurrency),
            "--db", str(Path(tmp) / "r.db"),
            "--port", str(port), "--admin-port", str(admin), "--log-level", "warning",
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{admin}/readyz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the proxy did not start")
                time.sleep(0.1)
            loaded = asyncio.run(
                run_load(f"http://127.0.0.1:{port}/rate", connections=16, requests=tasks,
                         body=b"x" * 256)
            )  # fmt: skip
            if loaded.statuses.get(202) != tasks:
                raise RuntimeError(f"not every task was accepted: {loaded.summary()}")
            end = time.monotonic() + args.seconds + burst / args.rate + 5
            while time.monotonic() < end and len(backend.received) < tasks:
                time.sleep(0.5)
        finally:
            process.terminate()
            process.wait(timeout=60)
        times = sorted(r.at for r in backend.received)
    measured, early = steady_rate(times, burst, args.seconds)
    error = measured / args.rate - 1
    report = {
        "rate": args.rate,
        "seconds": args.seconds,
        "burst": burst,
        "delivered_in_first_50ms": early,
        "measured_rate": round(measured, 3),
        "error_pct": round(error * 100, 2),
        "ingest_rps": round(loaded.throughput),
    }
    print(
        f"configured {args.rate:g}/s, measured {measured:.3f}/s over {args.seconds:g}s"
        f" ({error:+.2%}); initial burst {early} (bucket {burst})"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
