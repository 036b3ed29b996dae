"""The benchmark report: one command runs it all and writes bench/REPORT.md with plots.

    .venv/bin/pip install -e '.[bench]' && .venv/bin/python -m bench.report [--quick]

1. A spike: N requests fired at once at the proxy (embedded engine, ``synchronous=FULL``)
   in front of a recording backend; accepted vs delivered per second over time, with the
   configured rate drawn, and the backlog (``ingest_proxy_queue_depth``) over time.
2. Ingest latency (p50, p99) against offered load, open loop, for the proxy and for a bare
   Starlette app that only answers 202, in the same run and at the same offered loads;
   plus closed-loop throughput of both, alternating, and their ratio.

The server under test runs on CPU 0, the load generator and the backend on CPU 1. Every
load is bounded in count and time and goes to 127.0.0.1 only. Not part of pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench import goals
from bench.ingest_local import server
from bench.loadgen import LoadResult, run_load
from tests.support.backend import RecordingBackend, run_backend
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench"
PLOTS = OUT / "report"
BODY = b'{"event": "click", "pad": "' + b"x" * 990 + b'"}'
HEADERS = {"Content-Type": "application/json"}
CONNECTIONS = 64
START_TIMEOUT = 60.0


@dataclass
class Spike:
    """What the spike run measured (times relative to the first request, seconds)."""

    requests: int
    rate: float
    burst: int
    concurrency: int
    accepted_at: list[float]
    delivered_at: list[float]
    depth: list[tuple[float, float]]
    max_in_flight: int
    statuses: dict[int, int]

    @property
    def accept_seconds(self) -> float:
        return max(self.accepted_at) if self.accepted_at else 0.0

    @property
    def steady_rate(self) -> float:
        """Delivery rate after the initial burst: (n - 1) / span of those deliveries."""
        steady = sorted(self.delivered_at)[self.burst :]
        if len(steady) < 2:
            return 0.0
        return (len(steady) - 1) / (steady[-1] - steady[0])


@contextlib.contextmanager
def process(command: list[str], ready_url: str) -> Iterator[int]:
    """Run ``command`` on CPU 0 until ``ready_url`` answers 2xx; yield its pid. Its stderr
    (the proxy's access log, at its defaults) goes to a file, as a log collector takes it."""
    with (
        tempfile.TemporaryFile(prefix="bench-report-log-") as log,
        server(command, 0, ready_url=ready_url, stderr=log) as pid,
    ):
        yield pid


def proxy_command(config: Path, port: int, admin_port: int) -> list[str]:
    return [
        sys.executable, "-m", "proxy", "serve", "--config", str(config),
        "--port", str(port), "--admin-port", str(admin_port),
    ]  # fmt: skip


def write_config(directory: Path, target: str, rate: float, concurrency: int) -> Path:
    config = directory / "proxy.toml"
    config.write_text(
        f'[[queues]]\nname = "spike"\ntarget = "{target}"\nrate = {rate}\n'
        f"concurrency = {concurrency}\nmax_backlog_tasks = 5000000\n"
        f'[local]\ndb = "{directory / "bench.db"}"\n'
    )
    return config


def load(port: int, **kwargs: object) -> LoadResult:
    return asyncio.run(
        run_load(
            f"http://127.0.0.1:{port}/ingest/events",
            connections=CONNECTIONS,
            body=BODY,
            headers=HEADERS,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def sample_depth(admin: str, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    """Scrape the queue depth every 0.2 s until ``stop`` is set."""
    pattern = re.compile(r'^ingest_proxy_queue_depth\{queue="spike"\} (\S+)$', re.MULTILINE)
    with httpx.Client(timeout=5) as client:
        while not stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                match = pattern.search(client.get(f"{admin}/metrics").text)
                if match:
                    out.append((time.monotonic(), float(match.group(1))))
            stop.wait(0.2)


def run_spike(requests: int, rate: float, concurrency: int) -> Spike:
    """Fire ``requests`` at once; record acceptances, deliveries and backlog depth."""
    backend = RecordingBackend(delay=0.02)
    with run_backend(backend), tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        config = write_config(Path(tmp), backend.url, rate, concurrency)
        port, admin_port = free_port(), free_port()
        admin = f"http://127.0.0.1:{admin_port}"
        with process(proxy_command(config, port, admin_port), f"{admin}/readyz"):
            depth: list[tuple[float, float]] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample_depth, args=(admin, stop, depth))
            sampler.start()
            time.sleep(0.5)
            started = time.monotonic()
            result = load(port, requests=requests)
            accepted = result.statuses.get(202, 0)
            backend.wait_for_count(accepted, timeout=accepted / rate * 2 + 60)
            time.sleep(0.5)
            stop.set()
            sampler.join()
    burst = 10 if rate == 1 else max(1, -(-int(rate) // 5))
    return Spike(
        requests=requests,
        rate=rate,
        burst=burst,
        concurrency=concurrency,
        accepted_at=[t - started for t in result.completed_at],
        delivered_at=[r.at - started for r in backend.received],
        depth=[(t - started, d) for t, d in depth],
        max_in_flight=backend.max_in_flight,
        statuses=dict(result.statuses),
    )


@dataclass
class LatencyPoint:
    offered: float
    achieved: float
    p50_ms: float
    p99_ms: float


def latency_curve(port: int, rates: list[float], seconds: float) -> list[LatencyPoint]:
    points = []
    for rate in rates:
        result = load(port, duration=seconds, rate=rate)
        points.append(
            LatencyPoint(
                rate,
                result.throughput,
                result.percentile(50) * 1000,
                result.percentile(99) * 1000,
            )
        )
    return points


def run_latency(rounds: int, seconds: float) -> dict[str, object]:
    """Closed-loop throughput of bare vs proxy (alternating) and latency curves of both at
    the same offered loads (fractions of the bare app's throughput)."""
    fractions = (0.1, 0.3, 0.5, 0.7, 0.9)
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        config = write_config(Path(tmp), "http://127.0.0.1:9", 1, 1)
        port, admin_port = free_port(), free_port()
        servers = {
            # the bare app answers 202 on every path, so any path tells it is up
            "bare": ([sys.executable, "-m", "bench.bare_app", "--port", str(port)],
                     f"http://127.0.0.1:{port}/up"),
            "proxy": (proxy_command(config, port, admin_port),
                      f"http://127.0.0.1:{admin_port}/readyz"),
        }  # fmt: skip
        throughput: dict[str, list[float]] = {"bare": [], "proxy": []}
        for _ in range(rounds):
            for name, (command, ready) in servers.items():
                with process(command, ready):
                    load(port, requests=3000)
                    throughput[name].append(load(port, duration=seconds).throughput)
        bare_max = statistics.median(throughput["bare"])
        rates = [float(round(bare_max * f)) for f in fractions]
        curves = {}
        for name, (command, ready) in servers.items():
            with process(command, ready):
                load(port, requests=2000)
                curves[name] = latency_curve(port, rates, seconds)
    return {"throughput": throughput, "curves": curves, "rates": rates}


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return (
        f"{model}, {os.cpu_count()} cores, {memory:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}; a shared, virtualised machine"
    )


def plot_spike(spike: Spike) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    end = max(spike.delivered_at + spike.accepted_at) + 1
    width = 0.25
    bins = [i * width for i in range(int(end / width) + 2)]

    def per_second(times: list[float]) -> list[float]:
        counts = [0] * (len(bins) - 1)
        for t in times:
            index = min(len(counts) - 1, max(0, int(t / width)))
            counts[index] += 1
        return [c / width for c in counts]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.step(bins[:-1], per_second(spike.accepted_at), where="post", label="accepted (202) per s")
    ax.step(bins[:-1], per_second(spike.delivered_at), where="post", label="delivered per s")
    ax.axhline(spike.rate, color="black", linestyle="--", linewidth=1, label="configured rate")
    ax.set_yscale("log")
    ax.set_xlabel("seconds since the spike started")
    ax.set_ylabel("requests per second (log)")
    ax.set_title(
        f"{spike.requests} requests at once -> smoothed to {spike.rate:g}/s "
        f"(concurrency {spike.concurrency})"
    )
    ax.legend()
    ax.grid(alpha=0.3)
    smoothing = PLOTS / "spike.png"
    fig.tight_layout()
    fig.savefig(smoothing, dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.plot([t for t, _ in spike.depth], [d for _, d in spike.depth], label="backlog")
    ax.set_xlabel("seconds since the spike started")
    ax.set_ylabel("tasks waiting or in flight")
    ax.set_title("Backlog depth (ingest_proxy_queue_depth, scraped every 0.2 s)")
    ax.grid(alpha=0.3)
    backlog = PLOTS / "backlog.png"
    fig.tight_layout()
    fig.savefig(backlog, dpi=110)
    plt.close(fig)
    return smoothing, backlog


def plot_latency(curves: dict[str, list[LatencyPoint]]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    PLOTS.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    styles = {"bare": "tab:gray", "proxy": "tab:blue"}
    labels = {"bare": "bare Starlette (202, nothing stored)", "proxy": "ingest-proxy (fsync'd)"}
    for name, points in curves.items():
        offered = [p.offered for p in points]
        ax.plot(offered, [p.p50_ms for p in points], "o-", color=styles[name],
                label=f"{labels[name]} p50")  # fmt: skip
        ax.plot(offered, [p.p99_ms for p in points], "s--", color=styles[name],
                label=f"{labels[name]} p99")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("offered load (requests per second, open loop, 64 connections)")
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("Ingest latency against offered load, same run")
    ax.legend()
    ax.grid(alpha=0.3)
    path = PLOTS / "latency.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(spike: Spike, latency: dict[str, object], command: str) -> Path:
    smoothing, backlog = plot_spike(spike)
    curves: dict[str, list[LatencyPoint]] = latency["curves"]  # type: ignore[assignment]
    throughput: dict[str, list[float]] = latency["throughput"]  # type: ignore[assignment]
    latency_png = plot_latency(curves)
    bare, proxy = statistics.median(throughput["bare"]), statistics.median(throughput["proxy"])
    half = min(curves["proxy"], key=lambda p: abs(p.offered - proxy / 2))
    half_bare = min(curves["bare"], key=lambda p: abs(p.offered - half.offered))
    accept_rps = len(spike.accepted_at) / spike.accept_seconds if spike.accept_seconds else 0
    rate_error = (spike.steady_rate - spike.rate) / spike.rate * 100
    rows = "\n".join(
        f"| {b.offered:.0f} | {b.p50_ms:.2f} | {b.p99_ms:.2f} | {p.achieved:.0f} "
        f"| {p.p50_ms:.2f} | {p.p99_ms:.2f} |"
        for b, p in zip(curves["bare"], curves["proxy"], strict=True)
    )
    rounds = len(throughput["bare"])
    headline = [
        (
            "durable ingest throughput, proxy / bare Starlette (closed loop, 64 connections, "
            "1 KiB bodies, `synchronous=FULL`)",
            f"**{proxy / bare:.0%}** ({proxy:.0f} vs {bare:.0f} requests/s, medians of {rounds} "
            f"alternating rounds: proxy {[round(x) for x in throughput['proxy']]}, "
            f"bare {[round(x) for x in throughput['bare']]})",
        ),
        (
            f"p99 ingest latency at half the proxy's throughput ({half.offered:.0f}/s offered)",
            f"proxy {half.p99_ms:.1f} ms, bare {half_bare.p99_ms:.1f} ms",
        ),
        (
            f"spike of {spike.requests} requests: accepted",
            f"{len(spike.accepted_at)} answered 202 in {spike.accept_seconds:.2f} s "
            f"({accept_rps:.0f}/s); all answers {spike.statuses}",
        ),
        (
            "spike: delivered",
            f"{len(spike.delivered_at)} of {len(spike.accepted_at)}, at "
            f"{spike.steady_rate:.2f}/s after the initial burst of {spike.burst} "
            f"(configured {spike.rate:g}/s, {rate_error:+.1f}%)",
        ),
        (
            "spike: most deliveries in flight at once",
            f"{spike.max_in_flight} (cap {spike.concurrency})",
        ),
    ]
    table = "\n".join(f"| {what} | {result} |" for what, result in headline)
    text = f"""# Benchmark report

Made by `{command}` on {time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}.

Machine: {machine()}. The server under test ran on CPU 0; the load generator (and, for
the spike, the recording backend) on CPU 1. Numbers are ratios against a bare Starlette app
measured in the same run, since this machine is shared and noisy.

## Headline

| what | result |
|---|---|
{table}

## 1. A spike in, a steady rate out

![spike]({smoothing.relative_to(OUT)})

![backlog]({backlog.relative_to(OUT)})

## 2. Ingest latency against offered load

![latency]({latency_png.relative_to(OUT)})

| offered/s | bare p50 ms | bare p99 ms | proxy achieved/s | proxy p50 ms | proxy p99 ms |
|---|---|---|---|---|---|
{rows}

Open loop: latency is measured from the moment each request was due, so queueing inside
a saturated server shows (no coordinated omission). Where the proxy's achieved rate falls
below the offered rate, it is past its capacity and latency grows without bound.

{goals.sections()}"""
    path = OUT / "REPORT.md"
    path.write_text(text)
    return path


def main() -> None:
    """Run everything (about two minutes) and write bench/REPORT.md and its plots."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs, for trying it out")
    parser.add_argument("--spike", type=int, default=2000, help="requests in the spike")
    parser.add_argument("--rate", type=float, default=50.0, help="configured delivery rate")
    parser.add_argument(
        "--run-benches",
        action="store_true",
        help="first run ingest_defaults, delivery_capacity and stalled_stderr (~20 min);"
        " otherwise their last saved results (bench/results/) are reported",
    )
    args = parser.parse_args()
    if args.run_benches:
        goals.run_all()
    os.sched_setaffinity(0, {1})
    spike_size = 300 if args.quick else args.spike
    spike = run_spike(spike_size, args.rate, concurrency=8)
    latency = run_latency(rounds=1 if args.quick else 3, seconds=1.5 if args.quick else 4.0)
    command = "python -m bench.report" + (" --quick" if args.quick else "")
    print(write_report(spike, latency, command).read_text())


if __name__ == "__main__":
    main()
