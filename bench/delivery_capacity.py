"""Delivery capacity: 10 queues at 500/s each to a fast backend, from a full backlog.

    .venv/bin/python -m bench.delivery_capacity [--seconds 10] [--backlog-seconds 30]
                                                [--cpus 0 --cpus 0,1] [--quick] [--tree PATH]

A TOML config with 10 queues ``q0``..``q9`` (``rate = 500``, everything else at its
default) and routes ``/qN`` -> ``qN`` (prefix stripped). For each CPU mode (the server
pinned to CPU 0, or allowed CPUs 0 and 1):

1. fill: the proxy runs with the queues pointed at a closed port at 1/s, and
   bench/loadgen.py queues ``backlog-seconds * 500`` tasks of ~1 KiB per queue; the proxy
   is stopped (SIGTERM);
2. deliver: the proxy restarts on the same database with the queues pointed at
   bench/fast_backend.py (its own process, on CPU 1; the target path is ``/qN``, so the
   backend counts per queue). After 5 s (the initial token-bucket bursts, and any catching
   up), over a window of
   ``--seconds``: deliveries/s per queue (the backend's counts), CPU µs per delivery of the
   proxy by thread (/proc/<pid>/task/*/stat), the backend's CPU per request and share of its
   core (its capacity is at least 1e6 / µs per request: that cost falls as load rises),
   and the backlog left at the end
   (``ingest_proxy_queue_depth``; it must not reach 0, or the rate is not the proxy's limit);
3. beside it: a raw aiohttp ClientSession loop (bench/delivery_clients.py, uvloop, 100 in
   flight, same CPUs as the proxy) against the same backend, for its CPU µs per request.

The proxy runs at its defaults otherwise (log level ``info``: one log line per delivery,
stderr to a file). Bounded in count and time; traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.delivery_clients import run_child
from bench.fast_backend import Backend, running
from bench.loadgen import run_load

NAME = "delivery_capacity"  # its file in bench/results
QUEUES = 10
RATE = 500
SETTLE = 5.0  # seconds: the buckets start full, and startup may lag behind the rate


def queues(target: str | None) -> list[dict[str, Any]]:
    return [
        {
            "name": f"q{i}",
            "target": f"{target}/q{i}" if target else harness.DEAD_TARGET,
            "rate": RATE if target else 1,
        }
        for i in range(QUEUES)
    ]


ROUTES = [{"prefix": f"/q{i}", "queue": f"q{i}", "strip_prefix": True} for i in range(QUEUES)]


async def fill(port: int, per_queue: int) -> list[int]:
    """Queue ``per_queue`` tasks in each queue at once (6 connections per queue)."""
    results = await asyncio.gather(
        *(
            run_load(
                f"http://127.0.0.1:{port}/q{i}/ingest/events",
                connections=6,
                requests=per_queue,
                duration=300,
                body=harness.BODY,
                headers=harness.HEADERS,
            )
            for i in range(QUEUES)
        )
    )
    return [r.statuses.get(202, 0) for r in results]


def _counts(backend: Backend) -> tuple[dict[str, int], float]:
    """The backend's request counts by path prefix, and when they were counted (monotonic
    seconds). They are read over HTTP, which takes a while on a loaded machine: the time
    is the middle of the call, and rates use the time between two such readings."""
    asked = time.monotonic()
    counts: dict[str, int] = backend.stats()["by_prefix"]
    return counts, (asked + time.monotonic()) / 2


def measure(
    cpus: str,
    directory: Path,
    backend: Backend,
    per_queue: int,
    seconds: float,
    tree: Path,
    extra: tuple[str, ...],
) -> dict[str, Any]:
    """One CPU mode: fill the backlog, then deliver it; ``extra``: more ``serve`` flags."""
    tag = cpus.replace(",", "-")
    db = directory / f"capacity-{tag}.db"
    started = time.monotonic()
    fill_config = harness.write_config(directory / f"fill-{tag}.toml", db, queues(None), ROUTES)
    with (
        (directory / f"fill-{tag}.log").open("wb") as log,
        harness.proxy(fill_config, cpus=cpus, tree=tree, stderr=log) as p,
    ):
        accepted = asyncio.run(fill(p.port, per_queue))
    if sum(accepted) != per_queue * QUEUES:
        raise RuntimeError(f"not every task was accepted: {accepted}")
    fill_seconds = time.monotonic() - started

    config = harness.write_config(
        directory / f"deliver-{tag}.toml", db, queues(backend.url), ROUTES
    )
    log_path = directory / f"deliver-{tag}.log"
    with (
        log_path.open("wb") as log,
        harness.proxy(config, cpus=cpus, tree=tree, stderr=log, extra=extra) as p,
    ):
        time.sleep(SETTLE)
        names = harness.thread_names(p.pid)
        before, counted_from = _counts(backend)
        backend_before = backend.ticks()
        with harness.cpu_window(p.pid, names) as window:
            time.sleep(seconds)
        after, counted_to = _counts(backend)
        counted_for = counted_to - counted_from
        backend_after = backend.ticks()
        metrics = p.metrics()
    assert isinstance(before, dict)
    assert isinstance(after, dict)
    per_queue_rate = [
        round((after.get(f"/q{i}", 0) - before.get(f"/q{i}", 0)) / counted_for, 1)
        for i in range(QUEUES)
    ]
    delivered = sum(after.get(f"/q{i}", 0) - before.get(f"/q{i}", 0) for i in range(QUEUES))
    backend_ticks = backend_after - backend_before
    backend_us = backend_ticks * harness.TICK_US / delivered if delivered else 0.0
    depth = "ingest_proxy_queue_depth"
    backlog = [harness.metric_sum(metrics, depth, queue=f"q{i}") for i in range(QUEUES)]
    raw = run_child("aiohttp", 100, min(seconds, 5.0), backend, loop="uvloop", cpus=cpus)
    return {
        "cpus": cpus,
        "backlog_per_queue": per_queue,
        "fill_seconds": round(fill_seconds, 1),
        "window_s": round(window.seconds, 2),
        "counted_s": round(counted_for, 2),
        "deliveries_per_s": round(delivered / counted_for, 1),
        "target_per_s": QUEUES * RATE,
        "per_queue_per_s": per_queue_rate,
        "backlog_left": backlog,
        # the deliveries within the CPU window, at the rate counted around it
        "proxy_cpu_us_per_delivery": window.us_per(round(delivered * window.seconds / counted_for)),
        "proxy_core_pct": window.core_pct(),
        "proxy_other_threads": window.other_names(),
        "proxy_child_processes": window.children,
        "backend_us_per_request": round(backend_us, 1),
        "backend_core_pct": round(backend_ticks * harness.TICK_US / 1e6 / window.seconds * 100, 1),
        "backend_capacity_per_s": round(1e6 / backend_us) if backend_us else None,
        "raw_aiohttp": {
            k: raw.get(k)
            for k in ("rps", "client_us", "backend_us", "backend_core_pct", "error", "loop")
            if k in raw
        },
        "dispatches_total_2xx": harness.metric_sum(
            metrics, "ingest_proxy_dispatches_total", status_class="2xx"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--backlog-seconds", type=float, default=30.0)
    parser.add_argument("--cpus", action="append", help="server CPUs (repeat); default 0 and 0,1")
    parser.add_argument("--quick", action="store_true", help="12 s of backlog, a 3 s window")
    harness.add_run_flags(parser, delivery_processes=True)
    args = parser.parse_args()
    extra = harness.delivery_process_flags(args.delivery_processes)
    if args.quick:
        args.seconds, args.backlog_seconds = 3.0, 12.0
    if args.backlog_seconds < SETTLE + args.seconds + 2:
        # The buckets start full and the settling drains SETTLE seconds' worth: a backlog
        # that runs dry in the window measures the backlog, not the proxy (the quick mode's
        # 5 s did: 0 deliveries).
        parser.error(f"--backlog-seconds must be at least {SETTLE + args.seconds + 2:g}")
    modes = args.cpus or ["0", "0,1"]
    per_queue = int(args.backlog_seconds * RATE)
    os.sched_setaffinity(0, {1})
    report: dict[str, Any] = {
        "queues": QUEUES,
        "rate_per_queue": RATE,
        "delivery_processes": "default" if args.delivery_processes < 0 else args.delivery_processes,
        "tree": str(args.tree),
        "python": sys.version.split()[0],
        "load_average_before": harness.load_average(),
        "pressure_before": harness.pressure(),
        "modes": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as tmp, running("1") as backend:
        for cpus in modes:
            result = measure(cpus, Path(tmp), backend, per_queue, args.seconds, args.tree, extra)
            report["modes"].append(result)
            print(line(result), flush=True)
    report["load_average_after"] = harness.load_average()
    report["pressure_after"] = harness.pressure()
    print()
    print(table(report["modes"]))
    harness.report_done(NAME, report, args.save)


def line(r: dict[str, Any]) -> str:
    cpu = r["proxy_cpu_us_per_delivery"]
    raw = r["raw_aiohttp"]
    raw_text = f"{raw['client_us']} µs/req at {raw['rps']:.0f}/s" if "rps" in raw else str(raw)
    return (
        f"server on CPUs {r['cpus']}: {r['deliveries_per_s']:.0f} deliveries/s of"
        f" {r['target_per_s']} (per queue {min(r['per_queue_per_s']):.0f}-"
        f"{max(r['per_queue_per_s']):.0f}); proxy {cpu['total']} µs/delivery (loop"
        f" {cpu['loop']}, SQLite writer {cpu['sqlite_writer']}, log writer {cpu['log_writer']},"
        f" other {cpu['other']}, child processes {cpu['child_processes']}),"
        f" {r['proxy_core_pct'].get('total')} % of a core; backlog left"
        f" {min(x or 0 for x in r['backlog_left']):.0f}+ per queue\n"
        f"  the backend is faster than the proxy: >= {r['backend_capacity_per_s']} req/s capacity"
        f" (1e6 / its {r['backend_us_per_request']} µs/req in this run; less per request under"
        f" more load) vs the proxy's {r['deliveries_per_s']:.0f} deliveries/s, at"
        f" {r['backend_core_pct']} % of its core during the run\n"
        f"  raw aiohttp loop, same CPUs: {raw_text}"
    )


def table(modes: list[dict[str, Any]]) -> str:
    lines = [
        "| server CPUs | deliveries/s (of 5000) | per queue | proxy µs/delivery: total"
        " | loop | SQLite writer | log writer | other | child processes | proxy core % |"
        " raw aiohttp µs/req | backend µs/req (core %) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in modes:
        cpu = r["proxy_cpu_us_per_delivery"]
        raw = r["raw_aiohttp"].get("client_us", "—")
        lines.append(
            f"| {r['cpus']} | {r['deliveries_per_s']:.0f} | {min(r['per_queue_per_s']):.0f}-"
            f"{max(r['per_queue_per_s']):.0f} | {cpu['total']} | {cpu['loop']}"
            f" | {cpu['sqlite_writer']} | {cpu['log_writer']} | {cpu['other']}"
            f" | {cpu['child_processes']} | {r['proxy_core_pct'].get('total')}"
            f" | {raw} | {r['backend_us_per_request']} ({r['backend_core_pct']} %) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
