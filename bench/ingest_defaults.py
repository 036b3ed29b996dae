"""Durable ingest at the proxy's default settings against bare Starlette, idle and while
delivering at 500/s, in one run.

    .venv/bin/python -m bench.ingest_defaults [--rounds 5] [--requests 20000] [--quick]
                                              [--tree PATH]

``python -m proxy serve`` runs at its defaults (log level ``info``, access log on, JSON
lines on stderr, which goes to a file in /dev/shm here, see ``--log-to``;
``synchronous = "FULL"``): the TOML config has only the database path and the queue.
The server under test is pinned to CPU 0, this load generator (bench/loadgen.py, 64
keep-alive connections, ~1 KiB JSON POSTs, closed loop, 3,000 requests of warm-up then
``--requests`` measured) and the fast backend
(bench/fast_backend.py) to CPU 1. Per round, one after the other, each proxy mode between
two runs of ``bare`` (its ratio is to their mean: the machine's speed drifts):

- ``bare``: bench/bare_app.py (202 and nothing else);
- ``proxy``: the proxy, its queue pointed at a closed port at 1/s (nothing delivered);
- ``proxy_delivering``: the proxy, its queue (``rate = 500``) delivering to the fast
  backend, from a backlog: the database is first filled with ``--prefill`` tasks (30 s at
  500/s) by the proxy pointed at a closed port, then the proxy restarts on it pointed at the
  backend. The warm-up and the measurement only add tasks, so the backlog never empties
  (its depth is read before and after the window); the delivered rate is the backend's
  count over the measured window;
- ``proxy_delivering_2cpu``: as ``proxy_delivering``, but its delivery process (the
  ``local.delivery_processes`` child, which makes the HTTP requests) moved to CPU 1, beside
  the load generator and the backend, as it would run on a 2-core machine: the proxy
  process itself (event loop, SQLite writer, scheduling) stays alone on CPU 0, like the
  bare app. The load generator loses what the child takes from CPU 1, so this row errs
  against the proxy;
- extra rows, labelled as such: both proxy modes with ``--log-level warning`` (logging off:
  the figure earlier benches reported).

Reported: per round each mode's answers/s and its ratio to ``bare``, the median of the
per-round ratios, and CPU µs per request of the server by thread (the event-loop thread,
the SQLite writer, the log writer thread if there is one, the others; from
/proc/<pid>/task/*/stat, thread names from ``py-spy dump``).
Everything is bounded in count and time and stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import harness
from bench.fast_backend import Backend, running
from bench.ingest_local import bare, server
from bench.loadgen import LoadResult, run_load

NAME = "ingest_defaults"  # its file in bench/results
WARMUP = 3000
SETTLE = 0.5  # after the warm-up: the dispatcher is past its initial burst
MODES = ("bare", "proxy", "proxy_delivering", "proxy_delivering_2cpu")
EXTRAS = ("proxy_log_warning", "proxy_delivering_log_warning")


def load(port: int, requests: int) -> LoadResult:
    return asyncio.run(
        run_load(
            f"http://127.0.0.1:{port}/ingest/events",
            connections=harness.CONNECTIONS,
            requests=requests,
            duration=120,
            body=harness.BODY,
            headers=harness.HEADERS,
        )
    )


def check(result: LoadResult, requests: int) -> None:
    if result.errors or set(result.statuses) != {202} or result.requests != requests:
        raise RuntimeError(f"unexpected answers: {result.summary()}")


@dataclass
class Run:
    """One measured run: answers/s, server CPU µs per request by thread group, and when
    delivering, the delivered rate over the window and the backlog at its end."""

    mode: str
    rps: float
    cpu_us: dict[str, float]
    core_pct: dict[str, float]
    p99_ms: float
    delivered_per_s: float | None = None
    backlog_before: float | None = None
    backlog_after: float | None = None
    log_bytes_per_request: float | None = None
    other_threads: list[str] = field(default_factory=list)


def measure_bare(requests: int) -> Run:
    port = harness.free_port()
    with server(bare(port), port) as pid:
        check(load(port, WARMUP), WARMUP)
        with harness.cpu_window(pid, {}) as window:
            result = load(port, requests)
        check(result, requests)
    return Run(
        "bare",
        result.throughput,
        window.us_per(result.requests),
        window.core_pct(),
        round(result.percentile(99) * 1000, 2),
    )


@contextlib.contextmanager
def log_sink(path: Path, mode: str) -> Iterator[tuple[Any, Callable[[], int]]]:
    """Where the proxy's stderr goes, and a function giving the bytes it wrote so far:

    - ``memory`` (default): a file in /dev/shm, a destination that always keeps up, costs
      the proxy its writes and nobody else anything (no disk shared with the database, no
      reader process taking the load generator's CPU);
    - ``pipe``: a pipe read by a collector process on CPU 1, as a container runtime reads
      it (that reader competes with the load generator for CPU 1, in the proxy's rows only);
    - ``file``: a file beside the database, on the same disk.
    """
    if mode in ("file", "memory"):
        target = path if mode == "file" else Path("/dev/shm") / path.name
        try:
            with target.open("ab") as stderr:
                yield stderr, lambda: target.stat().st_size
        finally:
            if mode == "memory":
                target.unlink(missing_ok=True)
        return
    kept = Path("/dev/shm") / path.name
    read_end, write_end = os.pipe()
    collector = subprocess.Popen(
        ["taskset", "-c", "1", "dd", f"of={kept}", "bs=64k", "status=none"], stdin=read_end
    )
    os.close(read_end)
    try:
        with os.fdopen(write_end, "wb") as stderr:
            yield stderr, lambda: kept.stat().st_size if kept.exists() else 0
    finally:
        collector.wait(timeout=30)
        kept.unlink(missing_ok=True)


def measure_proxy(
    mode: str,
    directory: Path,
    requests: int,
    tree: Path,
    backend: Backend | None,
    quiet: bool,
    prefill: int,
    log_to: str,
    extra: tuple[str, ...],
) -> Run:
    """One measured run of the proxy; ``log_to`` as ``--log-to``, ``extra``: more flags."""
    name = f"{mode}-{time.monotonic_ns()}"
    db = directory / f"{name}.db"
    log = directory / f"{name}.log"
    if quiet:
        extra = ("--log-level", "warning", *extra)
    idle = {"name": "default", "target": harness.DEAD_TARGET, "rate": 1}
    if backend:
        fill = harness.write_config(directory / f"{name}-fill.toml", db, [idle])
        with log.open("wb") as stderr, harness.proxy(fill, tree=tree, stderr=stderr) as p:
            check(load(p.port, prefill), prefill)
        queue = {"name": "default", "target": f"{backend.url}/deliver", "rate": 500}
    else:
        queue = idle
    config = harness.write_config(directory / f"{name}.toml", db, [queue])
    with (
        log_sink(log, log_to) as (stderr, log_size),
        harness.proxy(config, tree=tree, extra=extra, stderr=stderr) as p,
    ):
        if mode.endswith("_2cpu"):
            harness.pin_descendants(p.pid, {1})
        check(load(p.port, WARMUP), WARMUP)
        if backend:
            time.sleep(SETTLE)
        names = harness.thread_names(p.pid)
        depth = "ingest_proxy_queue_depth"
        backlog_before = harness.metric_sum(p.metrics(), depth, queue="default")
        delivered_before = backend.requests() if backend else 0
        log_before = log_size()
        with harness.cpu_window(p.pid, names) as window:
            result = load(p.port, requests)
        delivered = (backend.requests() - delivered_before) if backend else None
        log_bytes = log_size() - log_before
        check(result, requests)
        backlog_after = harness.metric_sum(p.metrics(), depth, queue="default")
    return Run(
        mode,
        result.throughput,
        window.us_per(result.requests),
        window.core_pct(),
        round(result.percentile(99) * 1000, 2),
        round(delivered / window.seconds, 1) if delivered is not None else None,
        backlog_before,
        backlog_after,
        round(log_bytes / result.requests, 1),
        window.other_names(),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--prefill", type=int, default=15_000, help="backlog before delivering")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-extras", action="store_true", help="skip the logging-off rows")
    parser.add_argument("--quick", action="store_true", help="1 round of 5,000 requests")
    harness.add_run_flags(parser, delivery_processes=True)
    parser.add_argument(
        "--log-to",
        choices=["memory", "pipe", "file"],
        default="memory",
        help="the proxy's stderr: a file in /dev/shm (default), a pipe read by a collector"
        " process on CPU 1, or a file on the database's disk",
    )
    args = parser.parse_args()
    extra = harness.delivery_process_flags(args.delivery_processes)
    if args.quick:
        args.rounds, args.requests, args.prefill = 1, 5000, 5000
    os.sched_setaffinity(0, {1})
    modes = MODES + (() if args.no_extras else EXTRAS)
    runs: dict[str, list[Run]] = {m: [] for m in modes}
    ratios: dict[str, list[float]] = {m: [] for m in modes if m != "bare"}
    report: dict[str, Any] = {
        "requests": args.requests,
        "rounds": args.rounds,
        "connections": harness.CONNECTIONS,
        "tree": str(args.tree),
        "log_to": args.log_to,
        "delivery_processes": "default" if args.delivery_processes < 0 else args.delivery_processes,
        "load_average_before": harness.load_average(),
        "pressure_before": harness.pressure(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-defaults-") as tmp, running("1") as backend:
        directory = Path(tmp)
        for round_ in range(args.rounds):
            # Each proxy run is compared with the bare runs just before and just after
            # it: the machine's speed drifts within a round (other tenants), and a bare
            # run at the start of the round alone made the later modes' ratios drift too.
            before = measure_bare(args.requests)
            runs["bare"].append(before)
            for mode in ratios:
                run = measure_proxy(
                    mode,
                    directory,
                    args.requests,
                    args.tree,
                    backend if "delivering" in mode else None,
                    quiet=mode.endswith("log_warning"),
                    prefill=args.prefill,
                    log_to=args.log_to,
                    extra=extra,
                )
                after = measure_bare(args.requests)
                runs[mode].append(run)
                runs["bare"].append(after)
                ratios[mode].append(run.rps / ((before.rps + after.rps) / 2))
                before = after
            bare_rps = statistics.median(r.rps for r in runs["bare"][-len(ratios) - 1 :])
            print(
                f"round {round_ + 1}: bare {bare_rps:.0f}/s (median of the round); "
                + "; ".join(
                    f"{m} {runs[m][-1].rps:.0f}/s ({ratios[m][-1]:.1%})"
                    + (
                        f", delivering {runs[m][-1].delivered_per_s:.0f}/s (backlog"
                        f" {runs[m][-1].backlog_before:.0f} -> {runs[m][-1].backlog_after:.0f})"
                        if runs[m][-1].delivered_per_s is not None
                        else ""
                    )
                    for m in ratios
                ),
                flush=True,
            )
    report["load_average_after"] = harness.load_average()
    report["pressure_after"] = harness.pressure()
    report["modes"] = {m: summarize(v, ratios.get(m)) for m, v in runs.items()}
    report["runs"] = {m: [asdict(r) for r in v] for m, v in runs.items()}
    print()
    print(table(report["modes"]))
    harness.report_done(NAME, report, args.save)


def summarize(runs: list[Run], ratios: list[float] | None) -> dict[str, Any]:
    def med(key: str, group: str) -> float:
        return round(statistics.median(getattr(r, key)[group] for r in runs), 1)

    out: dict[str, Any] = {
        "rps": [round(r.rps) for r in runs],
        "median_rps": round(statistics.median(r.rps for r in runs)),
        "cpu_us": {g: med("cpu_us", g) for g in (*harness.GROUPS, "total")},
        "core_pct": {g: med("core_pct", g) for g in (*harness.GROUPS, "total")},
        "p99_ms": round(statistics.median(r.p99_ms for r in runs), 2),
    }
    if ratios is not None:
        out["ratios"] = [round(x, 3) for x in ratios]
        out["ratio_median_of_rounds"] = round(statistics.median(ratios), 3)
    delivered = [r.delivered_per_s for r in runs if r.delivered_per_s is not None]
    if delivered:
        out["delivered_per_s"] = delivered
        out["backlog_before"] = [r.backlog_before for r in runs]
        out["backlog_after"] = [r.backlog_after for r in runs]
    logged = [r.log_bytes_per_request for r in runs if r.log_bytes_per_request is not None]
    if logged:
        out["log_bytes_per_request"] = round(statistics.median(logged), 1)
    others = sorted({n for r in runs for n in r.other_threads})
    if others:
        out["other_threads"] = others
    return out


def table(modes: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| mode | req/s (median) | / bare (median of rounds) | per round |"
        " CPU µs/req: loop | SQLite writer | log writer | other | child processes |"
        " loop core % | delivered/s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, s in modes.items():
        label = mode + (" (extra: --log-level warning)" if mode in EXTRAS else "")
        ratio = f"{s['ratio_median_of_rounds']:.1%}" if "ratio_median_of_rounds" in s else "—"
        per_round = ", ".join(f"{x:.0%}" for x in s.get("ratios", [])) or "—"
        delivered = ", ".join(f"{x:.0f}" for x in s.get("delivered_per_s", [])) or "—"
        cpu = s["cpu_us"]
        lines.append(
            f"| {label} | {s['median_rps']:,} | {ratio} | {per_round} | {cpu['loop']}"
            f" | {cpu['sqlite_writer']} | {cpu['log_writer']} | {cpu['other']}"
            f" | {cpu['child_processes']} | {s['core_pct']['loop']} | {delivered} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
