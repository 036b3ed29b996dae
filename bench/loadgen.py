"""A small asyncio HTTP/1.1 keep-alive load generator for loopback benchmarks.

Closed loop by default (each connection sends its next request when the previous answer
arrived); with ``rate`` it is open loop, and latency is measured from the time a request
was *due*, so a slow server cannot hide its queueing (no coordinated omission).
Traffic goes only to the URL given, which must be on 127.0.0.0/8 or ::1.

    python -m bench.loadgen http://127.0.0.1:8080/path --connections 64 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_DURATION = 600.0


@dataclass
class LoadResult:
    """What a run measured. Latencies in seconds; ``throughput`` is answers per second."""

    requests: int = 0
    errors: int = 0
    elapsed: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list, repr=False)
    completed_at: list[float] = field(default_factory=list, repr=False)  # time.monotonic()

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile latency (0-100) in seconds."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict[str, object]:
        """Headline numbers as a JSON-able dict (latencies in milliseconds)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "elapsed_s": round(self.elapsed, 3),
            "throughput_rps": round(self.throughput, 1),
            "statuses": dict(self.statuses),
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p90_ms": round(self.percentile(90) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "max_ms": round(max(self.latencies, default=0) * 1000, 3),
        }


def _check_loopback(host: str) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise ValueError(f"load is only sent to loopback addresses, not {host!r}")


def _request_bytes(
    method: str, host: str, path: str, body: bytes, headers: dict[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    url: str,
    *,
    connections: int = 64,
    requests: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    method: str = "POST",
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Send load to ``url`` until ``requests`` answers arrived or ``duration`` seconds passed
    (at most 600 s either way). ``rate`` (requests/s over all connections) makes it open loop."""
    if requests is None and duration is None:
        raise ValueError("give requests, duration or both")
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 80
    _check_loopback(host)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    payload = _request_bytes(method, parts.netloc, path, body, headers or {})
    result = LoadResult()
    budget = requests if requests is not None else 1 << 62
    stop_at = time.perf_counter() + min(duration or MAX_DURATION, MAX_DURATION)
    started = time.perf_counter()
    interval = connections / rate if rate else 0.0

    async def connection(index: int) -> None:
        nonlocal budget
        reader, writer = await asyncio.open_connection(host, port)
        due = started + (index * interval / connections if rate else 0.0)
        try:
            while budget > 0 and time.perf_counter() < stop_at:
                budget -= 1
                if rate:
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent = due
                    due += interval
                else:
                    sent = time.perf_counter()
                try:
                    writer.write(payload)
                    status = await _read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    result.errors += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                result.latencies.append(time.perf_counter() - sent)
                result.completed_at.append(time.monotonic())
                result.statuses[status] += 1
                result.requests += 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(i) for i in range(connections)))
    result.elapsed = time.perf_counter() - started
    return result


def main() -> None:
    """Command line: print the run's summary as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--body-bytes", type=int, default=1024)
    parser.add_argument("--method", default="POST")
    args = parser.parse_args()
    body = (b"x" * args.body_bytes) if args.method in ("POST", "PUT", "PATCH") else b""
    result = asyncio.run(
        run_load(
            args.url,
            connections=args.connections,
            requests=args.requests,
            duration=args.duration if args.duration or args.requests else 10.0,
            rate=args.rate,
            method=args.method,
            body=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    )
    print(json.dumps(result.summary()))


if __name__ == "__main__":
    main()

__all__ = ["LoadResult", "run_load"]
