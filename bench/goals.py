"""Issue 13's benches in bench/REPORT.md: each goal beside what the saved run measured.

The three benches save their JSON summaries with ``--save`` (bench/results/*.json);
``python -m bench.report`` renders them with :func:`sections`, or runs them first with
``--run-benches``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bench import delivery_capacity, ingest_defaults, stalled_stderr
from bench.harness import RESULTS, ROOT

BENCHES = ("ingest_defaults", "delivery_capacity", "stalled_stderr")
TOLERANCE = 0.02  # the per-queue rate must hold within 2 %


def run_all() -> None:
    """Run the three benches in full and save their results (about 20 minutes)."""
    for name in BENCHES:
        subprocess.run([sys.executable, "-m", f"bench.{name}", "--save"], cwd=ROOT, check=True)


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def goal_rows(
    ingest: dict[str, Any], capacity: dict[str, Any], stalled: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """(goal, measured, verdict) for each goal of issue 13."""
    rows = []
    modes = ingest["modes"]
    idle, busy = modes["proxy"], modes["proxy_delivering"]
    rows.append((
        "ingest at default settings ≥ 0.85x bare Starlette",
        f"{idle['ratio_median_of_rounds']:.2f}x (median of per-round ratios"
        f" {', '.join(f'{r:.2f}' for r in idle['ratios'])}); CPU µs/request"
        f" {idle['cpu_us']['total']} vs bare {modes['bare']['cpu_us']['total']}"
        f" ({modes['bare']['cpu_us']['total'] / idle['cpu_us']['total']:.2f} by CPU; CPU 0"
        f" {idle['core_pct']['total']:.0f} % busy vs bare"
        f" {modes['bare']['core_pct']['total']:.0f} %)",
        _verdict(idle["ratio_median_of_rounds"] >= 0.85),
    ))  # fmt: skip
    delivered = busy.get("delivered_per_s", [])
    rows.append((
        "ingest while delivering 500/s ≥ 0.80x bare Starlette",
        f"{busy['ratio_median_of_rounds']:.2f}x (per round"
        f" {', '.join(f'{r:.2f}' for r in busy['ratios'])}), delivering"
        f" {', '.join(f'{d:.0f}' for d in delivered)}/s",
        _verdict(busy["ratio_median_of_rounds"] >= 0.80),
    ))  # fmt: skip
    spread = modes.get("proxy_delivering_2cpu")
    if spread is not None:
        rows.append((
            "the same, the delivery process on CPU 1 (with the load generator)",
            f"{spread['ratio_median_of_rounds']:.2f}x (per round"
            f" {', '.join(f'{r:.2f}' for r in spread['ratios'])})",
            _verdict(spread["ratio_median_of_rounds"] >= 0.80),
        ))  # fmt: skip
    by_cpus = {m["cpus"]: m for m in capacity["modes"]}
    for cpus, mode in by_cpus.items():
        total = mode["proxy_cpu_us_per_delivery"]["total"]
        raw = mode["raw_aiohttp"].get("client_us")
        if raw:
            rows.append((
                f"CPU per delivery ≤ 2x a raw aiohttp loop's (server on CPUs {cpus})",
                f"{total} µs vs {raw} µs: {total / raw:.2f}x",
                _verdict(total <= 2 * raw),
            ))  # fmt: skip
    both = by_cpus.get("0,1")
    if both:
        low, high = min(both["per_queue_per_s"]), max(both["per_queue_per_s"])
        rate = capacity["rate_per_queue"]
        rows.append((
            f"10 queues x {rate}/s held within ±2 % on both cores",
            f"{both['deliveries_per_s']:.0f}/s in all; per queue {low:.1f}-{high:.1f}/s"
            f" ({(low - rate) / rate:+.1%} to {(high - rate) / rate:+.1%})",
            _verdict(abs(low - rate) <= TOLERANCE * rate and abs(high - rate) <= TOLERANCE * rate),
        ))  # fmt: skip
    one = by_cpus.get("0")
    if one:
        rows.append((
            "≥ 3,500 deliveries/s pinned to one core",
            f"{one['deliveries_per_s']:.0f}/s",
            _verdict(one["deliveries_per_s"] >= 3500),
        ))  # fmt: skip
    runs = {r["mode"]: r for r in stalled["runs"]}
    stall, drained = runs["stalled"], runs["drained"]
    dropped_before = _number(stall.get("dropped_before_load"))
    dropped_after = _number(stall["dropped_metric"])
    counted = dropped_after is not None and dropped_after > (dropped_before or 0)
    rows.append((
        "stalled stderr: 5,000 requests after the pipe is full all get 202 within normal"
        " latency; dropped lines counted",
        f"{stall['accepted_202']} of {stall['requests']} got 202, p99 {stall['p99_ms']} ms"
        f" (drained: {drained['p99_ms']} ms); dropped lines {dropped_before or 0:g} →"
        f" {dropped_after:g}" if counted else f"{stall['accepted_202']} of {stall['requests']}",
        _verdict(stall["accepted_202"] == stall["requests"] and not stall["frozen"] and counted),
    ))  # fmt: skip
    return rows


def _number(text: object) -> float | None:
    try:
        return float(str(text))
    except ValueError:
        return None


def sections() -> str:
    """The Markdown of the goals table and the three benches' tables ('' without results)."""
    results = {name: load(name) for name in BENCHES}
    missing = [name for name, data in results.items() if data is None]
    if missing:
        return (
            "## Issue 13 benches\n\nNo saved results for "
            + ", ".join(missing)
            + ": run `python -m bench.report --run-benches`.\n"
        )
    ingest, capacity, stalled = (results[name] for name in BENCHES)
    assert ingest is not None
    assert capacity is not None
    assert stalled is not None
    goals = "\n".join(f"| {g} | {m} | {v} |" for g, m, v in goal_rows(ingest, capacity, stalled))
    return f"""## Goals (one run of each bench, ratios from within that run)

| goal | measured | |
|---|---|---|
{goals}

## 3. Ingest at the default settings, idle and while delivering 500/s

`python -m bench.ingest_defaults --save`, made {ingest["made"]}:
{len(ingest["modes"]["proxy"]["rps"])} rounds, each proxy mode between two bare runs (its ratio
is to their mean); server on CPU 0 (its delivery process too),
load and the fast backend on CPU 1. Rows marked *extra* turn logging off and are not the headline.

{ingest_defaults.table(ingest["modes"])}

## 4. Delivery capacity: 10 queues x 500/s from a backlog

`python -m bench.delivery_capacity --save`, made {capacity["made"]}. The fast backend
(bench/fast_backend.py) costs a fraction of what a delivery does (last column), so the
proxy is the limit.

{delivery_capacity.table(capacity["modes"])}

## 5. A stalled stderr

`python -m bench.stalled_stderr --save`, made {stalled["made"]}: the proxy's stderr is a
pipe nobody reads.

{stalled_stderr.table(stalled["runs"])}
"""
