"""Real uvicorn servers on 127.0.0.1, in a thread with its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from proxy.app import create_admin_app, create_app
from proxy.config.settings import Settings
from proxy.server import admin_options, ingress_options

START_TIMEOUT = 30.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    import uvloop

    return uvloop.new_event_loop


class _ThreadServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def serve_in_thread(
    app: Any,
    port: int | None = None,
    *,
    lifespan: str = "on",
    uvloop: bool = False,
    **options: Any,
) -> Iterator[str]:
    """Run ``app`` under uvicorn on 127.0.0.1; yield its base URL; stop it on exit.

    ``options`` are more uvicorn.Config arguments (the proxy's own, see run_proxy); with
    ``uvloop``, the event loop is uvloop's, as ``ingest-proxy serve`` runs it.
    """
    apps = [(app, {"lifespan": lifespan, **options})]
    with serve_together(apps, ports=[port], uvloop=uvloop) as (url,):
        yield url


@contextlib.contextmanager
def serve_together(
    apps: list[tuple[Any, dict[str, Any]]],
    ports: list[int | None] | None = None,
    *,
    uvloop: bool = False,
) -> Iterator[list[str]]:
    """Run several apps, each under its own uvicorn server, on one event loop in one thread
    (as ``ingest-proxy serve`` runs ingress and admin); yield their base URLs."""
    chosen = [p or free_port() for p in (ports or [None] * len(apps))]
    servers = []
    for (app, options), port in zip(apps, chosen, strict=True):
        settings: dict[str, Any] = {"log_level": "warning", "access_log": False}
        settings.update(options)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, **settings)
        servers.append(_ThreadServer(config))

    async def run_all() -> None:
        await asyncio.gather(*(server.serve() for server in servers))

    def run() -> None:
        factory = _uvloop_factory() if uvloop else None
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(run_all())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not all(server.started for server in servers):
        if not thread.is_alive():
            raise RuntimeError("server thread died during start-up")
        if time.monotonic() > deadline:
            raise TimeoutError(f"servers on ports {chosen} did not start in {START_TIMEOUT}s")
        time.sleep(0.01)
    try:
        yield [f"http://127.0.0.1:{port}" for port in chosen]
    finally:
        for server in servers:
            server.should_exit = True
        thread.join(timeout=START_TIMEOUT)


@dataclass
class RunningProxy:
    """A proxy under test: its ingress and admin base URLs and its app."""

    url: str
    admin_url: str
    app: Any


@contextlib.contextmanager
def run_proxy(settings: Settings) -> Iterator[RunningProxy]:
    """Start the proxy for ``settings`` (ingress and admin listeners) on free ports, with the
    same uvicorn options as ``ingest-proxy serve``."""
    app = create_app(settings)
    quiet = {"log_config": LOGGING_CONFIG, "log_level": "warning"}
    apps = [
        (app, ingress_options(settings) | quiet),
        (create_admin_app(app), admin_options(settings) | quiet),
    ]
    with serve_together(apps) as (url, admin_url):
        yield RunningProxy(url=url, admin_url=admin_url, app=app)


def wait_for(predicate: Any, timeout: float, interval: float = 0.02, message: str = "") -> None:
    """Poll ``predicate`` until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message or f"condition not met within {timeout}s")
        time.sleep(interval)
