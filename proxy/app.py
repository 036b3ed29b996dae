"""create_app(settings) -> the ingress Starlette app; its lifespan starts and stops the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.routing import Mount

from proxy.admin import create_admin_app as _create_admin_app
from proxy.config import Settings
from proxy.engines import Engine
from proxy.engines.factory import build_engine
from proxy.ingress import Ingress
from proxy.metrics import Metrics
from proxy.runtime import Runtime

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
    runtime = Runtime(settings=settings, engine=engine, metrics=metrics)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await engine.start()
        runtime.started = True
        try:
            yield
        finally:
            runtime.draining = True
            await engine.aclose()

    app = Starlette(routes=[Mount("/", app=Ingress(settings, engine, metrics))], lifespan=lifespan)
    app.state.runtime = runtime
    return app


def create_admin_app(app: Starlette) -> Starlette:
    """The admin app (health, readiness, metrics) for an app made by :func:`create_app`."""
    runtime: Runtime = app.state.runtime
    return _create_admin_app(runtime)
