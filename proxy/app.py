"""create_app(settings) -> the ingress Starlette app; its lifespan starts and stops the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from proxy.admin.routes import build_admin_app
from proxy.config.settings import Settings
from proxy.engines import Engine
from proxy.engines.factory import build_engine
from proxy.ingress.asgi import AsgiIngress
from proxy.ingress.pipeline import Ingress
from proxy.metrics import Metrics
from proxy.relay.listener import RelayingIngress
from proxy.relay.relay import Relay
from proxy.state import ProxyState

__all__ = ["create_admin_app", "create_app"]


def create_app(
    settings: Settings, *, engine: Engine | None = None, metrics: Metrics | None = None
) -> Starlette:
    """The ingress app: every method on every path becomes a task.

    The engine is built from ``settings`` unless given; the lifespan starts it and closes it
    on shutdown. ``app.state.runtime`` is shared with :func:`create_admin_app`.
    """
    metrics = metrics if metrics is not None else Metrics()
    engine = engine if engine is not None else build_engine(settings, metrics)
    runtime = ProxyState(settings=settings, engine=engine, metrics=metrics)
    relay = build_relay(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        if relay is not None:
            await relay.start()
        runtime.started = True
        try:
            yield
        finally:
            runtime.draining = True
            if relay is not None:
                await relay.aclose()
            await engine.aclose()

    ingress = Ingress(settings, engine, metrics)
    if relay is not None and settings.cloudtasks.relay_port is None:
        ingress = RelayingIngress(settings, engine, metrics, relay)
    app = ProxyApp(ingress, lifespan=lifespan)
    app.state.runtime = runtime
    app.state.relay = relay  # served by the relay's own listener when it has a port
    return app


def build_relay(settings: Settings, metrics: Metrics) -> Relay | None:
    """The Cloud Tasks delivery relay when a queue is in relay mode, else ``None``."""
    if settings.engine != "cloudtasks":
        return None
    if not any(settings.cloudtasks.relays(queue) for queue in settings.queues):
        return None
    return Relay(settings, metrics)


class ProxyApp(Starlette):
    """A Starlette app whose HTTP requests all go straight to the ingress.

    Lifespan (engine start and stop) runs through Starlette as usual; HTTP requests skip its
    router and middleware, since the ingress answers every path itself and turns every
    error into a response. Per-request Python work decides ingest throughput.
    """

    def __init__(self, ingress: Ingress, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ingress = ingress  # the ingress listener's protocol calls its steps itself
        self._asgi = AsgiIngress(ingress)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._asgi(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_admin_app(app: Starlette) -> Starlette:
    """The admin app (health, readiness, metrics) for an app made by :func:`create_app`."""
    runtime: ProxyState = app.state.runtime
    return build_admin_app(runtime)
