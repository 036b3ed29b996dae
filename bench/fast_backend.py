"""A minimal, fast HTTP/1.1 keep-alive backend for loopback delivery benchmarks.

    .venv/bin/python -m bench.fast_backend --port 9000            # serve until SIGTERM/SIGINT
    .venv/bin/python -m bench.fast_backend --measure [--quick]    # its capacity, see below

An ``asyncio.Protocol`` on the ``httptools`` parser (on uvloop when it is installed): every
request, on any path and with any method, gets ``200`` with a 2-byte body. Bodies are read
in full (and counted), keep-alive follows the request (HTTP/1.1 unless ``Connection:
close``; HTTP/1.0 only with ``Connection: keep-alive``), requests that arrive back to back
on one connection are answered in order, and a malformed request gets a ``400`` and a
close. It listens on 127.0.0.1 only.

``GET /_backend/stats`` (not counted) answers JSON: the pid, how many requests and body
bytes it received, and the requests per first path segment (``/q3/ingest/events`` counts
under ``/q3``), so a bench can take the delivered rate per queue from two readings.

``--measure`` runs the backend in its own process on CPU 1 and loads it from CPU 0 with an
aiohttp ClientSession at 100 requests in flight (and the raw httptools client of
bench/delivery_clients.py, the cheapest load there is), then reports requests/s, the
backend's CPU microseconds per request and the share of its core it used: its capacity on
one core is about ``1e6 / (µs per request)`` requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httptools

ROOT = Path(__file__).resolve().parents[1]
STATS_PATH = b"/_backend/stats"
OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
OK_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
    b"Connection: close\r\n\r\nok"
)
BAD = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n"
    b"Connection: close\r\n\r\nbad request"
)
START_TIMEOUT = 30.0


class Stats:
    """What the backend has received since it started."""

    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes = 0
        self.by_prefix: Counter[bytes] = Counter()

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "pid": os.getpid(),
                "requests": self.requests,
                "body_bytes": self.body_bytes,
                "by_prefix": {k.decode("latin-1"): v for k, v in self.by_prefix.items()},
            }
        ).encode()


def prefix(url: bytes) -> bytes:
    """The first path segment of a request target: ``/q3/x?y`` -> ``/q3``."""
    path = url.split(b"?", 1)[0]
    end = path.find(b"/", 1)
    return path if end < 0 else path[:end]


class BackendProtocol(asyncio.Protocol):
    """One connection: parse with httptools, answer each complete request at once."""

    __slots__ = ("_parser", "_paused", "_stats", "_transport", "_url")

    def __init__(self, stats: Stats) -> None:
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        with contextlib.suppress(OSError):
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail()
        except httptools.HttpParserError:
            self._fail()

    def _fail(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(BAD)
            self._transport.close()

    # Writing never blocks for long: answers are tiny. If the peer stops reading, stop
    # reading its requests until the buffer drains.
    def pause_writing(self) -> None:
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self._transport is not None:
            self._transport.resume_reading()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_body(self, body: bytes) -> None:
        self._stats.body_bytes += len(body)

    def on_message_complete(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = self._parser.should_keep_alive()
        if self._url == STATS_PATH:
            body = self._stats.as_json()
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode()
                + (b"\r\n\r\n" if keep_alive else b"\r\nConnection: close\r\n\r\n")
            )
            transport.write(head + body)
        else:
            stats = self._stats
            stats.requests += 1
            stats.by_prefix[prefix(self._url)] += 1
            transport.write(OK if keep_alive else OK_CLOSE)
        if not keep_alive:
            transport.close()


async def serve(port: int, host: str = "127.0.0.1") -> None:
    """Serve until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    server = await loop.create_server(
        lambda: BackendProtocol(stats), host, port, backlog=2048, reuse_address=True
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def run(port: int) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(port))
    else:
        uvloop.run(serve(port))


# ----------------------------------------------------------------- for benches


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks of every thread of ``pid`` (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


@dataclass
class Backend:
    """A running fast backend process."""

    pid: int
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stats(self) -> dict[str, object]:
        """Its counters (GET /_backend/stats)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", STATS_PATH.decode())
            return dict(json.loads(connection.getresponse().read()))
        finally:
            connection.close()

    def requests(self) -> int:
        return int(self.stats()["requests"])  # type: ignore[call-overload]

    def ticks(self) -> int:
        return cpu_ticks(self.pid)


@contextlib.contextmanager
def running(cpus: str | None = "1", port: int | None = None) -> Iterator[Backend]:
    """Run the backend in its own process (pinned to ``cpus`` with taskset when there is
    one), until it answers; stop it by its pid afterwards."""
    port = port or free_port()
    command = [sys.executable, "-m", "bench.fast_backend", "--port", str(port)]
    if cpus is not None and _have_taskset():
        command = ["taskset", "-c", cpus, *command]
    process = subprocess.Popen(command, cwd=ROOT)
    backend = Backend(process.pid, port)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the fast backend exited with {process.returncode}")
            try:
                backend.stats()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("the fast backend did not start") from None
                time.sleep(0.05)
        yield backend
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _have_taskset() -> bool:
    return any((Path(d) / "taskset").exists() for d in os.environ.get("PATH", "").split(":"))


def measure(seconds: float) -> dict[str, object]:
    """The backend on CPU 1, loaded from CPU 0 at 100 in flight by aiohttp and by the raw
    httptools client: requests/s, backend CPU µs per request, and its share of its core."""
    from bench.delivery_clients import run_child

    rows = []
    with running("1") as backend:
        for client in ("aiohttp", "raw-httptools"):
            for loop in ("asyncio", "uvloop"):
                result = run_child(
                    client, 100, seconds, backend, loop=loop, python=sys.executable, cpus="0"
                )
                if "error" in result:
                    rows.append({"client": client, "loop": loop, "error": result["error"]})
                    continue
                rows.append(
                    {
                        "client": client,
                        "loop": loop,
                        "rps": result["rps"],
                        "backend_us_per_request": result["backend_us"],
                        "backend_core_pct": result["backend_core_pct"],
                        "backend_capacity_rps": round(1e6 / result["backend_us"])
                        if result["backend_us"]
                        else None,
                        "client_us_per_request": result["client_us"],
                    }
                )
    return {
        "in_flight": 100,
        "seconds": seconds,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--measure", action="store_true", help="measure its capacity")
    parser.add_argument("--seconds", type=float, default=5.0, help="with --measure")
    parser.add_argument("--quick", action="store_true", help="with --measure: 1.5 s runs")
    args = parser.parse_args()
    if not args.measure:
        run(args.port)
        return
    report = measure(1.5 if args.quick else args.seconds)
    print(f"fast backend on CPU 1, load from CPU 0, {report['in_flight']} in flight")
    print(
        f"{'load':<16}{'loop':<9}{'req/s':>8}{'backend µs/req':>16}{'core %':>8}"
        f"{'capacity/s':>12}{'client µs/req':>15}"
    )
    for row in report["rows"]:  # type: ignore[attr-defined]
        if "error" in row:
            print(f"{row['client']:<16}{row['loop']:<9} error: {row['error']}")
            continue
        print(
            f"{row['client']:<16}{row['loop']:<9}{row['rps']:>8.0f}"
            f"{row['backend_us_per_request']:>16.1f}{row['backend_core_pct']:>8.0f}"
            f"{row['backend_capacity_rps']:>12}{row['client_us_per_request']:>15.1f}"
        )
    print(json.dumps(report))


if __name__ == "__main__":
    main()
