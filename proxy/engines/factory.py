"""Pick and build the engine the settings ask for."""

from __future__ import annotations

from proxy.config.settings import Settings
from proxy.engines import Engine
from proxy.metrics import Metrics


def build_engine(settings: Settings, metrics: Metrics) -> Engine:
    """The configured engine, built but not started (the app lifespan starts it)."""
    if settings.engine == "cloudtasks":
        from proxy.engines.cloudtasks.engine import CloudTasksEngine

        return CloudTasksEngine(settings, metrics)
    from proxy.engines.local.engine import LocalEngine

    return LocalEngine(settings, metrics)
