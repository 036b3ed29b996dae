"""``ingest-proxy demo``: watch a spike being smoothed, in one command.

Starts a deliberately slow demo backend and the proxy (embedded engine, a temporary
SQLite file) on free loopback ports, fires a spike of requests at the proxy, and shows
live how many were accepted and how many delivered per second. Stops by itself once
every request was delivered, or after a time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from proxy.app import create_app
from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.http_client import ConnectionPool
from proxy.server import ingress_options


@dataclass
class DemoBackend:
    """A slow backend: answers 200 after ``delay`` seconds and counts what it received."""

    delay: float
    received: int = 0
    arrivals: list[float] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(self.delay)
        self.received += 1
        self.arrivals.append(time.monotonic())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def _serving(app: Any, port: int, **options: Any) -> AsyncIterator[None]:
    defaults: dict[str, Any] = {"log_level": "error", "access_log": False, "lifespan": "off"}
    options = defaults | options
    server = _QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("demo server stopped during start-up")
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def demo_settings(target: str, db: Path, rate: float, concurrency: int) -> Settings:
    """Embedded-engine settings for the demo queue."""
    return settings_from_dict(
        {
            "queues": [
                {"name": "demo", "target": target, "rate": rate, "concurrency": concurrency}
            ],
            "local": {"db": str(db)},
            "server": {"access_log": False, "log_level": "error"},
        }
    )


async def _fire(url: str, count: int, accepted: Callable[[], None]) -> None:
    pool = ConnectionPool(32)  # the delivery client serves as the demo's load generator
    headers = {"content-type": "application/json"}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            index = queue.get_nowait()
            body = json.dumps({"order": index}).encode()
            request = pool.request("POST", f"{url}/orders/{index}", headers, body, limit=65536)
            answer = await asyncio.wait_for(request, 30)
            if answer.status == 202:
                accepted()

    try:
        await asyncio.gather(*(worker() for _ in range(32)))
    finally:
        await pool.close()


def _table(accepted: int, delivered: int, rate_in: float, rate_out: float, rate: float) -> Table:
    table = Table(show_header=True, header_style="bold")
    for column in ("", "total", "per second"):
        table.add_column(column, justify="right")
    table.add_row("accepted (202)", str(accepted), f"{rate_in:8.1f}")
    table.add_row("delivered to backend", str(delivered), f"{rate_out:8.1f}")
    table.add_row("backlog", str(accepted - delivered), f"configured rate {rate:g}/s")
    return table


async def run_demo(
    *, requests: int = 300, rate: float = 20.0, concurrency: int = 4, delay: float = 0.1
) -> int:
    """Run the demo; return 0 when every accepted request was delivered in time."""
    console = Console()
    backend = DemoBackend(delay=delay)
    backend_port, proxy_port = _free_port(), _free_port()
    time_limit = requests / rate * 1.5 + 30
    with tempfile.TemporaryDirectory(prefix="ingest-proxy-demo-") as tmp:
        settings = demo_settings(
            f"http://127.0.0.1:{backend_port}", Path(tmp) / "demo.db", rate, concurrency
        )
        app = create_app(settings)
        options = ingress_options(settings) | {"log_level": "error"}
        console.print(
            f"[bold]ingest-proxy demo[/]: {requests} requests at once -> proxy on "
            f"127.0.0.1:{proxy_port} -> backend ({delay:g} s per request) at {rate:g}/s, "
            f"at most {concurrency} at a time"
        )
        async with _serving(backend, backend_port), _serving(app, proxy_port, **options):
            accepted = 0

            def on_accept() -> None:
                nonlocal accepted
                accepted += 1

            started = time.monotonic()
            accepted_at = started

            async def spike_then_mark() -> None:
                nonlocal accepted_at
                await _fire(f"http://127.0.0.1:{proxy_port}", requests, on_accept)
                accepted_at = time.monotonic()

            spike = asyncio.create_task(spike_then_mark())
            progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            bar_in = progress.add_task("accepted ", total=requests)
            bar_out = progress.add_task("delivered", total=requests)
            last = (started, 0, 0)
            rate_in = rate_out = 0.0
            live_table = _table(0, 0, 0, 0, rate)
            with Live(console=console, refresh_per_second=4, transient=False) as live:
                while time.monotonic() - started < time_limit:
                    await asyncio.sleep(0.25)
                    now = time.monotonic()
                    if now - last[0] >= 1.0:
                        span = now - last[0]
                        rate_in = (accepted - last[1]) / span
                        rate_out = (backend.received - last[2]) / span
                        last = (now, accepted, backend.received)
                    progress.update(bar_in, completed=accepted)
                    progress.update(bar_out, completed=backend.received)
                    live_table = _table(accepted, backend.received, rate_in, rate_out, rate)
                    grid = Table.grid()
                    grid.add_row(progress)
                    grid.add_row(live_table)
                    live.update(grid)
                    if spike.done() and backend.received >= accepted:
                        break
            await spike
    return _summary(console, backend, accepted, requests, rate, accepted_at - started)


def _summary(
    console: Console,
    backend: DemoBackend,
    accepted: int,
    requests: int,
    rate: float,
    accept_seconds: float,
) -> int:
    arrivals = backend.arrivals
    span = (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    measured = (len(arrivals) - 1) / span if span else 0.0
    console.print(
        f"accepted {accepted} of {requests} requests in {accept_seconds:.2f} s "
        f"({accepted / max(accept_seconds, 0.001):.0f}/s); delivered {backend.received} "
        f"over {span:.1f} s = {measured:.1f}/s (configured {rate:g}/s)"
    )
    if backend.received < accepted:
        console.print("[red]not every accepted request was delivered within the time limit[/]")
        return 1
    return 0


def main(requests: int, rate: float, concurrency: int, delay: float) -> int:
    """Entry point of ``ingest-proxy demo``."""
    try:
        return asyncio.run(
            run_demo(requests=requests, rate=rate, concurrency=concurrency, delay=delay)
        )
    except KeyboardInterrupt:
        print("demo interrupted", file=sys.stderr)
        return 130
