"""The embedded engine: tasks in a local SQLite file, delivered by a built-in dispatcher.

Modules: ``writer`` (the one SQLite writer thread, group commit), ``store`` (schema and
queries: tasks, leases, de-dup, dead letters), ``bucket`` (token bucket and 429/503
throttle), ``clock`` (injectable time), ``attempt`` (one HTTP attempt), ``dispatcher``
(per-queue scheduling and retries), ``engine`` (:class:`LocalEngine`).
"""

from __future__ import annotations

from proxy.engines.local.engine import LocalEngine, QueueStats
from proxy.engines.local.store import DeadLetter

__all__ = ["DeadLetter", "LocalEngine", "QueueStats"]
