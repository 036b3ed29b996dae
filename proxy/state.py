"""The running proxy's shared state: settings, engine, metrics and lifecycle flags."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.config.settings import Settings
from proxy.engines import Engine
from proxy.metrics import Metrics


@dataclass
class ProxyState:
    """What the ingress and admin listeners share. ``started`` is set once the engine is up;
    ``draining`` once shutdown began (readiness then fails so traffic moves elsewhere)."""

    settings: Settings
    engine: Engine
    metrics: Metrics
    started: bool = False
    draining: bool = False
