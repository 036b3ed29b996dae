"""What the Cloud Tasks relay's hop costs per delivery: added latency and the proxy's CPU.

    .venv/bin/python -m bench.relay_hop                   # 2000 deliveries per round, 3 rounds
    .venv/bin/python -m bench.relay_hop --requests 500 --rounds 1 --save

Cloud Tasks cannot run here, so the load generator plays it: it sends what Cloud Tasks
sends (a 1 KiB POST with the ``X-CloudTasks-*`` headers and an OIDC token signed by the
key of a real ``ingest-proxy cloudtasks-server``, whose REST port publishes the
certificates the relay checks it against), alternating per round

- **direct**: to the fast backend (``bench/fast_backend.py``, pinned to CPU 1), as Cloud
  Tasks delivers without the relay;
- **relay**: to the relay path of ``ingest-proxy serve --engine cloudtasks`` in relay mode
  (pinned to CPU 0, the queue without a backend token), which verifies the token and
  forwards the request to the same backend.

One connection, closed loop: the latency difference (p50, p99) is the hop's; then 16
connections for the relay's CPU per delivery (user + system ticks of the proxy process
over the deliveries). Every run is bounded in count and time; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import fast_backend
from bench.fast_backend import free_port
from bench.harness import (
    BODY,
    ROOT,
    TICK_US,
    Proxy,
    add_run_flags,
    clean_env,
    http_get,
    process_ticks,
    proxy_command,
    report_done,
    stop,
    taskset,
    wait_until_ready,
)
from bench.loadgen import run_load

QUEUE = "relayed"
INVOKER = "relay-invoker@bench.iam.gserviceaccount.com"
RELAY_PATH = "/_ingest-proxy/relay"
START_TIMEOUT = 60.0


@contextlib.contextmanager
def cloudtasks_server(db: Path) -> Iterator[tuple[int, int]]:
    """``ingest-proxy cloudtasks-server`` with its REST port; (gRPC port, REST port)."""
    port, rest = free_port(), free_port()
    command = [sys.executable, "-m", "proxy", "cloudtasks-server", "--port", str(port),
               "--rest-port", str(rest), "--db", str(db)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=clean_env(ROOT), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"cloudtasks-server exited with {process.returncode}")
            with contextlib.suppress(OSError):
                if http_get(rest, "/oauth2/v1/certs", 1.0)[0] == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("cloudtasks-server did not start")
            time.sleep(0.1)
        yield port, rest
    finally:
        stop(process)


def write_config(path: Path, *, grpc_port: int, rest_port: int, port: int, target: str) -> None:
    path.write_text(
        f"""engine = "cloudtasks"
[cloudtasks]
project = "bench"
location = "local"
emulator_host = "127.0.0.1:{grpc_port}"
relay = true
relay_url = "http://127.0.0.1:{port}{RELAY_PATH}"
relay_service_account_email = "{INVOKER}"
relay_issuer = "http://127.0.0.1:{rest_port}"
relay_certs_url = "http://127.0.0.1:{rest_port}/oauth2/v1/certs"
[[queues]]
name = "{QUEUE}"
target = "{target}"
auth = "none"
"""
    )


def token(db: Path, rest_port: int, audience: str) -> str:
    """An OIDC token as Cloud Tasks would send the relay, signed by the server's key."""
    from proxy.cloudtasks_server.signing import LocalSigner

    signer = LocalSigner(Path(f"{db}.signing-key.pem"), f"http://127.0.0.1:{rest_port}")
    spec = {"kind": "oidc", "email": INVOKER, "audience": audience}
    return signer.token(json.dumps(spec), time.time())


def deliveries(url: str, requests: int, connections: int, headers: dict[str, str]) -> Any:
    return asyncio.run(
        run_load(url, connections=connections, requests=requests, body=BODY, headers=headers)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="deliveries per run")
    parser.add_argument("--rounds", type=int, default=3)
    add_run_flags(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "tasks.db"
        config = Path(scratch) / "proxy.toml"
        port, admin = free_port(), free_port()
        with cloudtasks_server(db) as (grpc_port, rest_port), fast_backend.running("1") as backend:
            write_config(config, grpc_port=grpc_port, rest_port=rest_port, port=port,
                         target=backend.url)  # fmt: skip
            env = clean_env(args.tree)
            subprocess.run([sys.executable, "-m", "proxy", "queues", "apply", "--config",
                            str(config)], cwd=args.tree, env=env, check=True,
                           stdout=subprocess.DEVNULL, timeout=60)  # fmt: skip
            command = taskset("0", proxy_command(port, admin, config))
            # stderr: one log line per delivery, as in production, not on the terminal
            process = subprocess.Popen(command, cwd=args.tree, env=env, stderr=subprocess.DEVNULL)
            try:
                wait_until_ready(Proxy(process, port, admin))
                report = measure(args, db, rest_port, port, backend.url, process.pid)
            finally:
                stop(process)
    report_done("relay_hop", report, args.save)


def measure(
    args: argparse.Namespace, db: Path, rest_port: int, port: int, backend: str, pid: int
) -> dict[str, Any]:
    relay_url = f"http://127.0.0.1:{port}{RELAY_PATH}"
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Google-Cloud-Tasks",
        "X-CloudTasks-QueueName": QUEUE,
        "X-CloudTasks-TaskName": "bench-task",
        "X-CloudTasks-TaskRetryCount": "0",
        "X-CloudTasks-TaskExecutionCount": "0",
        "X-CloudTasks-TaskETA": f"{time.time():.6f}",
        "Authorization": "Bearer " + token(db, rest_port, relay_url),
    }
    warm = deliveries(f"{relay_url}/{QUEUE}/events", 200, 4, headers)
    if warm.statuses.get(200) != warm.requests:
        raise RuntimeError(f"the relay answered {dict(warm.statuses)}")
    rounds = []
    for _ in range(args.rounds):
        direct = deliveries(f"{backend}/events", args.requests, 1, headers)
        relayed = deliveries(f"{relay_url}/{QUEUE}/events", args.requests, 1, headers)
        before = process_ticks(pid)
        loaded = deliveries(f"{relay_url}/{QUEUE}/events", args.requests, 16, headers)
        cpu_us = (process_ticks(pid) - before) * TICK_US / max(1, loaded.requests)
        rounds.append(
            {
                "direct": direct.summary(),
                "relay": relayed.summary(),
                "relay_16_connections": loaded.summary(),
                "added_p50_ms": round((relayed.percentile(50) - direct.percentile(50)) * 1e3, 3),
                "added_p99_ms": round((relayed.percentile(99) - direct.percentile(99)) * 1e3, 3),
                "proxy_cpu_us_per_delivery": round(cpu_us, 1),
            }
        )
    return {
        "requests_per_run": args.requests,
        "rounds": rounds,
        "median_added_p50_ms": statistics.median(r["added_p50_ms"] for r in rounds),
        "median_added_p99_ms": statistics.median(r["added_p99_ms"] for r in rounds),
        "median_proxy_cpu_us_per_delivery": statistics.median(
            r["proxy_cpu_us_per_delivery"] for r in rounds
        ),
    }


if __name__ == "__main__":
    main()
