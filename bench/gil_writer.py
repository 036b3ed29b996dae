"""How long the SQLite writer thread takes for a batch while the event loop thread is busy,
at several GIL switch intervals (``sys.setswitchinterval``), in one run.

    .venv/bin/python -m bench.gil_writer [--batches 200] [--batch 32]

The writer (``proxy/engines/local/store/writer.py``) inserts a batch with ``executemany`` and
commits with ``synchronous = FULL``; ``sqlite3`` releases the GIL around every statement
step and must take it back after each one. While another thread runs Python code (the
event loop parsing requests), taking it back waits up to the switch interval. This
script pins itself to one CPU (as the benches pin the proxy), runs a thread that spins in
Python, and times the writer's batches of ~1 KiB rows in a real WAL database under it;
``idle`` is the same writer with nothing else running. Reported per row: wall µs (how
long the batch's clients wait) and the writer's CPU µs. Bounded: ``--batches`` batches per
setting; the database lives in a temporary directory beside the repository.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import harness
from proxy.engines.local.store.schema import SCHEMA
from proxy.engines.local.store.store import _INSERT
from proxy.engines.local.store.writer import PAGE_SIZE

NAME = "gil_writer"
INTERVALS = (0.005, 0.001, 0.0005, 0.0002)  # seconds; 0.005 is CPython's default


def _rows(count: int) -> list[tuple[Any, ...]]:
    now = time.time()
    body = b"x" * 1018
    return [
        (os.urandom(16).hex(), "q", "POST", "/e", "", "content-type\napplication/json",
         body, len(body), now, "r" * 32, now)
        for _ in range(count)
    ]  # fmt: skip


def measure(directory: Path, interval: float | None, batches: int, batch: int) -> dict[str, float]:
    """Per-row wall and CPU µs of ``batches`` writer batches; ``interval`` None: no busy
    thread (and the default interval)."""
    sys.setswitchinterval(interval or 0.005)
    path = directory / f"w-{interval}-{time.monotonic_ns()}.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(SCHEMA)
    stop = threading.Event()

    def spin() -> None:
        count = 0
        while not stop.is_set():
            count += 1

    result: dict[str, float] = {}

    def write() -> None:
        cpu, wall = time.thread_time(), time.perf_counter()
        for _ in range(batches):
            rows = _rows(batch)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        rows_written = batches * batch
        result["wall_us_per_row"] = round((time.perf_counter() - wall) / rows_written * 1e6, 1)
        result["cpu_us_per_row"] = round((time.thread_time() - cpu) / rows_written * 1e6, 1)

    spinner = threading.Thread(target=spin) if interval is not None else None
    if spinner is not None:
        spinner.start()
    writer = threading.Thread(target=write)
    writer.start()
    writer.join()
    stop.set()
    if spinner is not None:
        spinner.join()
    conn.close()
    sys.setswitchinterval(0.005)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--save", action="store_true", help="write bench/results/gil_writer.json")
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})
    report: dict[str, Any] = {"batch": args.batch, "batches": args.batches, "rows": {}}
    with tempfile.TemporaryDirectory(dir=harness.ROOT) as tmp:
        for interval in (None, *INTERVALS):
            name = "idle" if interval is None else f"busy, interval {interval * 1000:g} ms"
            report["rows"][name] = measure(Path(tmp), interval, args.batches, args.batch)
            print(name, report["rows"][name], flush=True)
    harness.report_done(NAME, report, args.save)


if __name__ == "__main__":
    main()
