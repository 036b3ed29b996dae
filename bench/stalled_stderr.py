"""Does a stalled log reader stop the proxy? stderr a full pipe nobody reads, against the
same with stderr drained.

    .venv/bin/python -m bench.stalled_stderr [--requests 5000] [--deadline 60] [--quick]
                                             [--tree PATH]

``python -m proxy serve`` at its defaults (log level ``info``, an access-log line per
request on stderr; a TOML config with only the database and a queue pointed at a closed port
at 1/s), pinned to CPU 0, its stderr the write end of a pipe. Two runs, each a fresh proxy:

- ``drained``: a thread reads the pipe all along;
- ``stalled``: the pipe is read until the proxy is ready, then no more; this process fills
  what is left of the pipe's buffer (64 KiB) with its own bytes, then sends requests in
  rounds of 2,000 until the proxy's own log buffer is full too (its dropped-lines counter
  moves; skipped for a proxy without that counter), and then sends the measured load.

Load: ``--requests`` ~1 KiB POSTs over 64 keep-alive connections, closed loop, from CPU 1,
given up after ``--deadline`` seconds in all (a proxy that stops answering is reported as
frozen, with how many answers came before). Reported per run: answers with 202, p50/p99
latency, throughput, and ``ingest_proxy_log_lines_dropped_total`` from the admin port
("absent" when the proxy has no such metric, "no answer" when the admin port does not
answer within 5 s). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import select
import statistics
import tempfile
import termios
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import harness
from bench.loadgen import _read_response, _request_bytes

NAME = "stalled_stderr"  # its file in bench/results
DROPPED = "ingest_proxy_log_lines_dropped_total"
CHUNK = 4096


@dataclass
class Outcome:
    """What one run saw."""

    mode: str
    requests: int
    accepted_202: int = 0
    other_answers: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    frozen: bool = False
    elapsed_s: float = 0.0
    throughput_rps: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    dropped_metric: str = "absent"
    dropped_before_load: str = "absent"
    fill_requests: int = 0
    pipe_bytes_filled: int = 0
    pipe_bytes_queued: int | None = None
    stderr_bytes_read: int = 0


async def send_all(port: int, total: int, connections: int, deadline: float) -> dict[str, Any]:
    """``total`` POSTs over ``connections`` keep-alive connections, closed loop; stops at
    ``deadline`` seconds whatever is still waiting."""
    payload = _request_bytes(
        "POST", f"127.0.0.1:{port}", "/ingest/events", harness.BODY, harness.HEADERS
    )
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    remaining = total

    async def connection() -> None:
        nonlocal remaining, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining > 0:
                remaining -= 1
                sent = time.perf_counter()
                try:
                    writer.write(payload)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[status] += 1
        finally:
            writer.close()

    started = time.perf_counter()
    frozen = False
    try:
        async with asyncio.timeout(deadline):
            await asyncio.gather(*(connection() for _ in range(connections)))
    except TimeoutError:
        frozen = True
    return {
        "latencies": latencies,
        "statuses": statuses,
        "errors": errors,
        "frozen": frozen,
        "elapsed": time.perf_counter() - started,
    }


class Drain(threading.Thread):
    """Reads a pipe until told to stop (or EOF); counts the bytes."""

    def __init__(self, fd: int) -> None:
        super().__init__(daemon=True)
        self.fd = fd
        self.bytes = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self.fd, 65536)
            except OSError:
                return
            if not data:
                return
            self.bytes += len(data)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)


def fill_pipe(fd: int, limit: float = 5.0) -> int:
    """Write to the pipe's write end until it takes no more (no room for 0.2 s); bytes
    written. From a thread: a write can block if the proxy takes the last room first."""
    written = 0

    def writer() -> None:
        nonlocal written
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        chunk = b"filler: nobody reads this pipe\n" * (CHUNK // 31)
        while poller.poll(200):
            try:
                written += os.write(fd, chunk)
            except OSError:
                return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    thread.join(timeout=limit)
    return written


def queued(fd: int) -> int | None:
    """Bytes waiting in the pipe (FIONREAD on its read end)."""
    with contextlib.suppress(OSError):
        buffer = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buffer)
        return int.from_bytes(buffer, "little")
    return None


def dropped_metric(running: harness.Proxy) -> str:
    try:
        text = running.metrics(timeout=5.0)
    except OSError:
        return "no answer"
    value = harness.metric_sum(text, DROPPED)
    return "absent" if value is None else f"{value:g}"


def fill_log_buffer(running: harness.Proxy, deadline: float) -> int:
    """Send rounds of 2,000 requests until the proxy drops log lines (its buffer is full);
    the requests sent. Nothing when it has no such counter, or stops answering."""
    sent = 0
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        value = dropped_metric(running)
        if value in ("absent", "no answer") or float(value) > 0:
            break
        result = asyncio.run(send_all(running.port, 2000, harness.CONNECTIONS, deadline))
        sent += 2000
        if result["frozen"]:
            break
    return sent


def run(mode: str, directory: Path, requests: int, deadline: float, tree: Path) -> Outcome:
    name = f"{mode}-{time.monotonic_ns()}"
    queue = {"name": "default", "target": harness.DEAD_TARGET, "rate": 1}
    config = harness.write_config(directory / f"{name}.toml", directory / f"{name}.db", [queue])
    read_end, write_end = os.pipe()
    drain = Drain(read_end)
    drain.start()
    outcome = Outcome(mode, requests)
    try:
        with harness.proxy(config, tree=tree, stderr=write_end) as p:
            if mode == "stalled":
                drain.stop()
                outcome.pipe_bytes_filled = fill_pipe(write_end)
                outcome.pipe_bytes_queued = queued(read_end)
                outcome.fill_requests = fill_log_buffer(p, deadline)
                outcome.dropped_before_load = dropped_metric(p)
            result = asyncio.run(send_all(p.port, requests, harness.CONNECTIONS, deadline))
            outcome.dropped_metric = dropped_metric(p)
            if mode == "stalled":
                # Let a blocked proxy go (its write fails with EPIPE), so it can stop.
                os.close(read_end)
                read_end = -1
    finally:
        drain.stop()
        outcome.stderr_bytes_read = drain.bytes
        for fd in (read_end, write_end):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
    latencies = sorted(result["latencies"])
    statuses: Counter[int] = result["statuses"]
    outcome.accepted_202 = statuses.get(202, 0)
    outcome.other_answers = {str(k): v for k, v in statuses.items() if k != 202}
    outcome.errors = result["errors"]
    outcome.frozen = result["frozen"]
    outcome.elapsed_s = round(result["elapsed"], 3)
    answered = sum(statuses.values())
    outcome.throughput_rps = round(answered / result["elapsed"], 1) if result["elapsed"] else 0
    if latencies:
        outcome.p50_ms = round(statistics.median(latencies) * 1000, 2)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        outcome.p99_ms = round(p99 * 1000, 2)
        outcome.max_ms = round(latencies[-1] * 1000, 2)
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--deadline", type=float, default=60.0, help="give up after (s)")
    parser.add_argument("--quick", action="store_true", help="a 15 s deadline")
    harness.add_run_flags(parser)
    args = parser.parse_args()
    if args.quick:
        args.deadline = 15.0
    os.sched_setaffinity(0, {1})
    report: dict[str, Any] = {
        "requests": args.requests,
        "deadline_s": args.deadline,
        "tree": str(args.tree),
        "load_average_before": harness.load_average(),
        "pressure_before": harness.pressure(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-stderr-") as tmp:
        outcomes = [
            run(mode, Path(tmp), args.requests, args.deadline, args.tree)
            for mode in ("drained", "stalled")
        ]
    report["load_average_after"] = harness.load_average()
    report["pressure_after"] = harness.pressure()
    report["runs"] = [asdict(o) for o in outcomes]
    print(table(report["runs"]))
    harness.report_done(NAME, report, args.save)


def table(runs: list[dict[str, Any]]) -> str:
    """The runs as a Markdown table, and what the stalled run filled first."""
    lines = [
        f"| stderr | 202 of sent | frozen | elapsed s | req/s | p50 ms | p99 ms | {DROPPED} |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for o in runs:
        answered = o["accepted_202"] + sum(o["other_answers"].values())
        frozen = f"yes, after {answered} answers" if o["frozen"] else "no"
        lines.append(
            f"| {o['mode']} | {o['accepted_202']} of {o['requests']} | {frozen}"
            f" | {o['elapsed_s']} | {o['throughput_rps']:.0f} | {o['p50_ms']} | {o['p99_ms']}"
            f" | {o['dropped_metric']} |"
        )
    stalled = runs[-1]
    lines.append("")
    lines.append(
        f"(stalled: the pipe was filled with {stalled['pipe_bytes_filled']} bytes, then"
        f" {stalled.get('fill_requests', 0)} requests filled the proxy's log buffer; lines"
        f" dropped before the measured load: {stalled.get('dropped_before_load', 'absent')},"
        f" after it: {stalled['dropped_metric']})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
