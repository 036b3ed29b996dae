"""Dispatch rate accuracy of ``ingest-proxy cloudtasks-server``: does a queue with
``max_dispatches_per_second = 50`` dispatch 50 per second?

    .venv/bin/python -m bench.cloudtasks_server_rate [--rate 50] [--seconds 60]

Starts a recording backend (uvicorn, in this process) and ``python -m proxy
cloudtasks-server`` on a fresh SQLite file; through the google-cloud-tasks client it
creates a paused queue (rate R, concurrency 100), creates ``R * seconds + 10 %`` HTTP tasks
to the backend, resumes the queue and records when each delivery arrives. The steady rate
is measured after the initial token-bucket burst (``max_burst_size``), over ``--seconds``
(goal: within +/-2 % of R). Bounded in time; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from google.cloud.tasks_v2 import HttpRequest, Queue, RateLimits, Task

from bench.dispatch_rate import steady_rate
from proxy.limits import default_burst
from tests.support.backend import run_backend
from tests.support.cloudtasks_server import sync_client
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
PARENT = "projects/bench/locations/local"
QUEUE = f"{PARENT}/queues/rate"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    burst = default_burst(args.rate)
    tasks = int(args.rate * args.seconds * 1.1) + burst
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    with tempfile.TemporaryDirectory(prefix="bench-ctrate-") as tmp, run_backend() as backend:
        command = [
            sys.executable, "-m", "proxy", "cloudtasks-server", "--port", str(port),
            "--db", str(Path(tmp) / "ct.db"), "--log-level", "warning",
        ]  # fmt: skip
        process = subprocess.Popen(command, cwd=ROOT, env=env)
        client, channel = sync_client(f"127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.list_queues(parent=PARENT, timeout=1)
                    break
                except Exception:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("the server did not start") from None
                    time.sleep(0.1)
            limits = RateLimits(
                max_dispatches_per_second=args.rate, max_concurrent_dispatches=args.concurrency
            )
            queue = client.create_queue(parent=PARENT, queue=Queue(name=QUEUE, rate_limits=limits))
            client.pause_queue(name=QUEUE)
            task = Task(http_request=HttpRequest(url=backend.url + "/rate", body=b"x" * 256))
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: client.create_task(parent=QUEUE, task=task, timeout=30),
                              range(tasks)))  # fmt: skip
            create_rps = tasks / (time.monotonic() - started)
            client.resume_queue(name=QUEUE)
            end = time.monotonic() + args.seconds + burst / args.rate + 10
            while time.monotonic() < end and len(backend.received) < tasks:
                time.sleep(0.5)
        finally:
            channel.close()
            process.terminate()
            process.wait(timeout=60)
        times = sorted(r.at for r in backend.received)
    measured, early = steady_rate(times, burst, args.seconds)
    error = measured / args.rate - 1
    report = {
        "rate": args.rate,
        "seconds": args.seconds,
        "burst": queue.rate_limits.max_burst_size,
        "delivered_in_first_50ms": early,
        "measured_rate": round(measured, 3),
        "error_pct": round(error * 100, 2),
        "create_task_per_s": round(create_rps),
    }
    print(
        f"configured {args.rate:g}/s, measured {measured:.3f}/s over {args.seconds:g}s"
        f" ({error:+.2%}); initial burst {early} (max_burst_size {burst})"
    )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
