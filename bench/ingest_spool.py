"""Ingest rate into the Cloud Tasks engine's spool during an outage, against the embedded
engine's, in one run.

    .venv/bin/python -m bench.ingest_spool [--requests 20000] [--rounds 3]

Alternating rounds, each on fresh files: ``python -m proxy serve`` with the embedded
engine (bench/ingest_local.py's set-up, ``synchronous=FULL``), then with the Cloud Tasks
engine and ``cloudtasks.spool`` while Cloud Tasks is down (its ``emulator_host`` is a
closed port of 127.0.0.1: every CreateTask fails at once with UNAVAILABLE, the breaker
opens during the warm-up, and from then on every request is written to the spool and
answered 202). Both at the proxy's default settings (log level info, access log on; the
log goes to a file in /dev/shm). Server on CPU 0, load generator on CPU 1, 64 keep-alive
connections of ~1 KiB POSTs (bench/loadgen.py); every answer must be a 202.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.ingest_local import CONNECTIONS, DEAD_TARGET, Run, measure, write_config
from tests.support.servers import free_port


def serve(port: int, config: Path) -> list[str]:
    """``python -m proxy serve`` at its defaults (log level info, access log on)."""
    admin = free_port()
    return [
        sys.executable, "-m", "proxy", "serve", "--config", str(config),
        "--port", str(port), "--admin-port", str(admin),
    ]  # fmt: skip


def measure_defaults(port: int, config: Path, requests: int) -> Run:
    """:func:`measure` with the proxy's log (JSON lines on stderr) in a file in /dev/shm, a
    destination that keeps up and costs the load generator nothing."""
    log = Path("/dev/shm") / f"bench-spool-{os.getpid()}-{port}.log"
    try:
        with log.open("wb") as stderr:
            return measure(serve(port, config), port, requests, stderr=stderr)
    finally:
        log.unlink(missing_ok=True)


def spool_config(directory: Path, name: str) -> Path:
    """The Cloud Tasks engine, Cloud Tasks unreachable, a spool in ``directory``."""
    config = directory / f"{name}.toml"
    config.write_text(
        'engine = "cloudtasks"\n'
        f'[[queues]]\nname = "default"\ntarget = "{DEAD_TARGET}"\n'
        '[cloudtasks]\nproject = "bench"\nlocation = "europe-west1"\n'
        f'emulator_host = "127.0.0.1:{free_port()}"\n'
        f'spool = "{directory / name}.spool.db"\nspool_max_tasks = 1000000\n'
        "spool_max_bytes = 4294967296\n"
    )
    return config


def summary(runs: list[Run]) -> dict[str, float]:
    return {
        "rps_median": round(statistics.median(r.rps for r in runs), 1),
        "rps_all": [round(r.rps, 1) for r in runs],  # type: ignore[dict-item]
        "loop_us_per_request": round(statistics.median(r.loop_us for r in runs), 1),
        "other_us_per_request": round(statistics.median(r.other_us for r in runs), 1),
        "rss_kib": max(r.rss_kib for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    runs: dict[str, list[Run]] = {"embedded": [], "spool_outage": []}
    ratios = []
    with tempfile.TemporaryDirectory(prefix="bench-spool-") as tmp:
        directory = Path(tmp)
        for round_ in range(args.rounds):
            port = free_port()
            config = write_config(directory, f"local{round_}")
            runs["embedded"].append(measure_defaults(port, config, args.requests))
            port = free_port()
            config = spool_config(directory, f"spool{round_}")
            runs["spool_outage"].append(measure_defaults(port, config, args.requests))
            ratios.append(runs["spool_outage"][-1].rps / runs["embedded"][-1].rps)
            print(
                f"round {round_ + 1}: embedded {runs['embedded'][-1].rps:.0f}/s, spool during"
                f" an outage {runs['spool_outage'][-1].rps:.0f}/s ({ratios[-1]:.0%})",
                flush=True,
            )
    report = {
        "requests": args.requests,
        "connections": CONNECTIONS,
        **{name: summary(values) for name, values in runs.items()},
        "spool_over_embedded_median": round(statistics.median(ratios), 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
