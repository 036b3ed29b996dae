"""What the proxy benches share: run ``python -m proxy serve`` pinned to CPUs, read its CPU
per thread from /proc, its metrics from the admin port.

The proxy runs from the tree given (``--tree``, default this checkout): a bench can measure
another version of the code, e.g. ``git archive HEAD | tar -x -C /tmp/before``. The bare
app, the fast backend and the load generator always run from this checkout.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.fast_backend import free_port

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
BODY = b'{"event": "click", "pad": "' + b"x" * 990 + b'"}'  # as bench/ingest_local.py
HEADERS = {"Content-Type": "application/json"}
CONNECTIONS = 64
DEAD_TARGET = "http://127.0.0.1:9"


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``path`` from 127.0.0.1:``port``: status and body. Raises OSError on failure."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@dataclass
class Proxy:
    """A running ``python -m proxy serve``."""

    process: subprocess.Popen[bytes]
    port: int
    admin_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def metrics(self, timeout: float = 5.0) -> str:
        return http_get(self.admin_port, "/metrics", timeout)[1].decode()


def proxy_command(
    port: int, admin_port: int, config: Path | None = None, extra: tuple[str, ...] = ()
) -> list[str]:
    """``python -m proxy serve`` at its defaults but for the listeners (and a config)."""
    command = [sys.executable, "-m", "proxy", "serve"]
    if config is not None:
        command += ["--config", str(config)]
    return [*command, "--port", str(port), "--admin-port", str(admin_port), *extra]


def clean_env(tree: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment without INGEST_PROXY_* settings, importing ``proxy`` from ``tree``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INGEST_PROXY_")}
    env["PYTHONPATH"] = str(tree)
    env.update(extra or {})
    return env


def taskset(cpus: str | None, command: list[str]) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", cpus, *command]


@contextlib.contextmanager
def proxy(
    config: Path | None,
    *,
    cpus: str | None = "0",
    tree: Path = ROOT,
    extra: tuple[str, ...] = (),
    stderr: int | IO[Any] | None = None,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
) -> Iterator[Proxy]:
    """Run the proxy pinned to ``cpus`` until its admin ``/readyz`` answers 2xx; stop it by
    its pid afterwards (SIGTERM, then SIGKILL after 30 s)."""
    port, admin = free_port(), free_port()
    command = taskset(cpus, proxy_command(port, admin, config, extra))
    process = subprocess.Popen(command, cwd=tree, env=clean_env(tree, env), stderr=stderr)
    running = Proxy(process, port, admin)
    try:
        if wait_ready:
            wait_until_ready(running)
        yield running
    finally:
        stop(process)


def wait_until_ready(running: Proxy, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if running.process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {running.process.returncode}")
        with contextlib.suppress(OSError):
            if http_get(running.admin_port, "/readyz", 1.0)[0] < 300:
                return
        if time.monotonic() > deadline:
            raise TimeoutError("the proxy did not become ready")
        time.sleep(0.1)


def stop(process: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM ``process`` (by its pid), SIGKILL it if it has not exited after ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ------------------------------------------------------------------ CPU per thread


def thread_ticks(pid: int) -> dict[int, int]:
    """User + system clock ticks of each thread of ``pid`` (from /proc/<pid>/task/*/stat)."""
    ticks: dict[int, int] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
            fields = text.rsplit(")", 1)[1].split()
            ticks[int(tid)] = int(fields[11]) + int(fields[12])
    return ticks


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def pin_descendants(pid: int, cpus: set[int]) -> list[int]:
    """Move every live process below ``pid`` (the proxy's delivery processes) to ``cpus``;
    the pids moved."""
    moved = descendants(pid)
    for child in moved:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(child, cpus)
    return moved


def children_ticks(pid: int) -> int:
    """User + system ticks of the live descendants of ``pid`` plus those of its children
    that have exited and were waited for (cutime + cstime of /proc/<pid>/stat)."""
    total = 0
    with contextlib.suppress(OSError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[13]) + int(fields[14])
    for child in descendants(pid):
        with contextlib.suppress(OSError):
            total += process_ticks(child)
    return total


def process_ticks(pid: int) -> int:
    """User + system clock ticks of the whole process (all threads, from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


GROUPS = ("loop", "sqlite_writer", "log_writer", "other", "child_processes")
_THREAD_LINE = re.compile(r'^Thread (0x[0-9a-fA-F]+|\d+) \([^)]*\): "(.*)"')


def thread_names(pid: int, tries: int = 3) -> dict[int, str]:
    """Python thread names by OS thread id, from ``py-spy dump --nonblocking`` (Python 3.11
    does not name OS threads); tried again when a dump misses the main thread (reading a
    running process can fail); empty when py-spy is missing or keeps failing."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return {}
    names: dict[int, str] = {}
    for _ in range(tries):
        try:
            done = subprocess.run(
                [spy, "dump", "--pid", str(pid), "--nonblocking"],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        for line in done.stdout.splitlines():
            match = _THREAD_LINE.match(line)
            if match:
                ident = match.group(1)
                names[int(ident, 16) if ident.startswith("0x") else int(ident)] = match.group(2)
        if pid in names:
            break
    return names


def thread_group(pid: int, tid: int, names: dict[int, str]) -> str:
    if tid == pid:
        return "loop"
    name = names.get(tid, "")
    if "sqlite" in name:
        return "sqlite_writer"
    if "log" in name:
        return "log_writer"
    return "other"


@dataclass
class CpuWindow:
    """CPU ticks of a process over a window, by thread group: the event loop (the main
    thread), the SQLite writer, the log writer (when the proxy has one), the others; and
    its child processes (e.g. delivery processes), all threads, as one group."""

    pid: int
    names: dict[int, str] = field(default_factory=dict)
    start: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0
    children_start: int = 0
    children_end: int = 0
    children: int = 0  # how many child processes there were at the end

    def begin(self) -> None:
        self.start = thread_ticks(self.pid)
        self.children_start = children_ticks(self.pid)
        self.started_at = time.monotonic()

    def finish(self) -> None:
        self.end = thread_ticks(self.pid)
        self.children_end = children_ticks(self.pid)
        self.children = len(descendants(self.pid))
        self.ended_at = time.monotonic()

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at

    def ticks_by_group(self) -> dict[str, int]:
        groups = dict.fromkeys(GROUPS, 0)
        for tid, ticks in self.end.items():
            group = thread_group(self.pid, tid, self.names)
            groups[group] += ticks - self.start.get(tid, 0)
        groups["child_processes"] = self.children_end - self.children_start
        return groups

    def us_per(self, count: int) -> dict[str, float]:
        """CPU µs per unit of work (``count`` of them in the window), by group and total."""
        groups = self.ticks_by_group()
        per = TICK_US / count if count else 0.0
        out = {k: round(v * per, 1) for k, v in groups.items()}
        out["total"] = round(sum(groups.values()) * per, 1)
        return out

    def core_pct(self) -> dict[str, float]:
        """Share of one core used over the window, by group and total."""
        groups = self.ticks_by_group()
        if not self.seconds:
            return {}
        out = {k: round(v * TICK_US / 1e6 / self.seconds * 100, 1) for k, v in groups.items()}
        out["total"] = round(sum(groups.values()) * TICK_US / 1e6 / self.seconds * 100, 1)
        return out

    def other_names(self) -> list[str]:
        return sorted(
            {
                self.names.get(tid, "?")
                for tid in self.end
                if thread_group(self.pid, tid, self.names) == "other"
            }
        )


@contextlib.contextmanager
def cpu_window(pid: int, names: dict[int, str] | None = None) -> Iterator[CpuWindow]:
    window = CpuWindow(pid, names if names is not None else thread_names(pid))
    window.begin()
    try:
        yield window
    finally:
        window.finish()


# ------------------------------------------------------------------ metrics


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def metric_values(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Samples of ``name`` in a Prometheus exposition: (labels, value)."""
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        out.append((labels, float(match.group(3))))
    return out


def metric_sum(text: str, name: str, **where: str) -> float | None:
    """Sum of the samples of ``name`` whose labels match ``where``; None when absent."""
    samples = [v for labels, v in metric_values(text, name) if labels.items() >= where.items()]
    return sum(samples) if samples else None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def pressure() -> dict[str, str]:
    """CPU and I/O pressure (/proc/pressure, "some avg10 avg60"): other work on the machine
    (fsync latency, for one, is shared with everything that writes to the disk)."""
    out = {}
    for kind in ("cpu", "io"):
        with contextlib.suppress(OSError):
            first = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0]
            fields = dict(item.split("=") for item in first.split()[1:])
            out[kind] = f"some avg10={fields['avg10']} avg60={fields['avg60']}"
    return out


def write_config(
    path: Path,
    db: Path,
    queues: list[dict[str, Any]],
    routes: list[dict[str, Any]] | None = None,
) -> Path:
    """A TOML config with only ``[local] db`` and the given queues and routes: every
    other setting stays at its default."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["[local]", f"db = {value(str(db))}", ""]
    for queue in queues:
        lines += ["[[queues]]", *(f"{k} = {value(v)}" for k, v in queue.items()), ""]
    for route in routes or []:
        lines += ["[[routes]]", *(f"{k} = {value(v)}" for k, v in route.items()), ""]
    path.write_text("\n".join(lines))
    return path


RESULTS = ROOT / "bench" / "results"


def save_result(name: str, report: dict[str, Any]) -> Path:
    """Write a bench's JSON summary to bench/results/<name>.json (read by bench/report.py)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    report = {"made": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), **report}
    path.write_text(json.dumps(report, indent=1) + "\n")
    return path


def add_run_flags(parser: argparse.ArgumentParser, *, delivery_processes: bool = False) -> None:
    """The flags every proxy bench takes: ``--tree`` and ``--save``, and with
    ``delivery_processes`` also ``--delivery-processes``."""
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the proxy from here")
    parser.add_argument(
        "--save", action="store_true", help="write bench/results/NAME.json, read by bench/report.py"
    )
    if delivery_processes:
        parser.add_argument(
            "--delivery-processes",
            type=int,
            default=-1,
            help="pass this to the proxy (0: deliver from its event loop); default: its default",
        )


def delivery_process_flags(count: int) -> tuple[str, ...]:
    """``serve`` flags for ``count`` delivery processes; none for -1 (the proxy's default)."""
    return ("--delivery-processes", str(count)) if count >= 0 else ()


def report_done(name: str, report: dict[str, Any], save: bool) -> None:
    """Print the JSON summary; with ``save``, also keep it in bench/results/<name>.json."""
    print(json.dumps(report))
    if save:
        print(f"saved {save_result(name, report)}")
