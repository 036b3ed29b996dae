"""Run the ingress and admin listeners in one process, with an orderly shutdown.

On SIGTERM or SIGINT: readiness fails at once, the ingress listener stops accepting and
finishes the requests in flight, the engine drains (lifespan shutdown), then the admin
listener stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from proxy._compiled import COMPILED_MODULES, compiled_modules, stale_modules
from proxy.app import create_admin_app, create_app
from proxy.config.settings import Settings
from proxy.http.admin_protocol import guarded_protocol
from proxy.http.ingress_protocol import ingress_protocol
from proxy.relay.listener import RelayApp
from proxy.state import ProxyState

logger = logging.getLogger("ingest_proxy")
HEAD_ALLOWANCE = 16 * 1024  # bytes of a request head beyond limits.max_header_bytes


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to :func:`serve`; with ``freeze_gc``,
    what exists once it started is frozen out of the garbage collector's full passes."""

    def __init__(self, config: uvicorn.Config, *, freeze_gc: bool = False) -> None:
        super().__init__(config)
        self.freeze_gc = freeze_gc

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.freeze_gc and self.started:
            gc.collect()
            gc.freeze()


def ingress_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options of the ingress listener (also used by the tests' servers)."""
    server = settings.server
    return {
        "lifespan": "on",
        "log_level": server.log_level,
        # X-Forwarded-For/-Proto from server.trusted_proxies are read by the ingress itself
        # (proxy/ingress/forwarded.py), in its one pass over the headers.
        "proxy_headers": False,
        "server_header": False,
        "timeout_graceful_shutdown": int(server.shutdown_grace),
        "access_log": False,  # the ingress writes its own request log, without query strings
        "log_config": None,
        "http": ingress_protocol(
            server.header_timeout, max_head_bytes(settings), settings.limits.body_timeout
        ),
        # No WebSockets: an Upgrade request is an ordinary request (its Upgrade and
        # Connection headers are hop-by-hop, never delivered), not a 500.
        "ws": "none",
    }


def max_head_bytes(settings: Settings) -> int:
    """Largest request head (request line and all headers) the ingress reads: room for
    the forwarded headers' limit, a delivery URL and the headers the proxy drops."""
    return settings.limits.max_header_bytes + HEAD_ALLOWANCE


def admin_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options of the admin listener: the same header deadline and head cap as the
    ingress (the admin port is private, but a stuck or hostile client must not hold it)."""
    return {
        "lifespan": "off",
        "log_level": settings.server.log_level,
        "server_header": False,
        "access_log": False,
        "log_config": None,
        "http": guarded_protocol(
            settings.server.header_timeout, max_head_bytes(settings), settings.limits.body_timeout
        ),
        "ws": "none",
    }


def build_servers(settings: Settings) -> tuple[_Server, _Server, ProxyState]:
    """The ingress and admin uvicorn servers for ``settings`` (not yet started)."""
    app = create_app(settings)
    runtime: ProxyState = app.state.runtime
    server = settings.server
    ingress = uvicorn.Config(app, host=server.host, port=server.port, **ingress_options(settings))
    admin = uvicorn.Config(
        create_admin_app(app),
        host=server.admin_host,
        port=server.admin_port,
        **admin_options(settings),
    )
    return _Server(ingress, freeze_gc=True), _Server(admin), runtime


def build_relay_server(settings: Settings, app: Any) -> _Server | None:
    """The relay's own listener (``cloudtasks.relay_port``) for the app of
    :func:`build_servers`, or ``None`` when the relay has none (off, or on the ingress
    port's reserved path)."""
    relay = app.state.relay
    port = settings.cloudtasks.relay_port
    if relay is None or port is None:
        return None
    host = settings.cloudtasks.relay_host or settings.server.host
    config = uvicorn.Config(
        RelayApp(relay, settings.limits.max_body_bytes),
        host=host,
        port=port,
        **admin_options(settings),
    )
    return _Server(config)


# Collect young objects every 20,000 allocations rather than 700: with a batch of
# enqueues waiting on every commit, many objects outlive a young collection, and the
# collector was 5-6 % of the event loop's time. Objects made while starting (modules,
# clients, TLS contexts) are frozen out of full collections once the ingress started.
GC_THRESHOLD = (20_000, 20, 20)
# Seconds a thread holding the GIL keeps it while another waits (CPython: 0.005). The
# SQLite writer thread needs the GIL back after each statement step; while the event loop
# is busy it waited up to 5 ms each time, so a batch of 32 inserts took ~7 ms (~1.9 ms at
# 0.5 ms) and its commit, fsync included, slid into the loop's idle moments instead of
# overlapping its work (bench/gil_writer.py; bench/README.md, round 4).
SWITCH_INTERVAL = 0.0005


def log_build() -> None:
    """Say at start whether the per-request modules run compiled (proxy/_compiled.py)."""
    compiled = compiled_modules()
    if len(compiled) == len(COMPILED_MODULES):
        logger.info("per-request modules compiled: %d of %d", len(compiled), len(compiled))
    else:
        logger.warning(
            "per-request modules compiled: %d of %d; the rest run interpreted, at about a"
            " third more CPU per request (built with INGEST_PROXY_PURE_PYTHON=1, or"
            " imported from a source tree without the build)",
            len(compiled),
            len(COMPILED_MODULES),
        )
    stale = stale_modules()
    if stale:
        logger.warning(
            "compiled modules older than their source (rebuild: pip install -e .): %s",
            ", ".join(stale),
        )


async def serve(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; return the process exit status."""
    gc.set_threshold(*GC_THRESHOLD)
    sys.setswitchinterval(SWITCH_INTERVAL)
    log_build()
    ingress, admin, runtime = build_servers(settings)
    loop = asyncio.get_running_loop()

    def stop() -> None:
        logger.info("shutdown requested: draining")
        runtime.draining = True
        ingress.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    admin_task = asyncio.create_task(admin.serve())
    relay = build_relay_server(settings, ingress.config.app)
    relay_task = asyncio.create_task(relay.serve()) if relay is not None else None
    try:
        await ingress.serve()
    finally:
        admin.should_exit = True
        await admin_task
        if relay is not None and relay_task is not None:
            relay.should_exit = True
            await relay_task
    return 0 if ingress.started else 1
