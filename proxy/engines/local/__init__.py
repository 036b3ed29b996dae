"""The embedded engine: tasks in a local SQLite file, delivered by a built-in dispatcher.

Modules: ``writer`` (the one SQLite writer thread, group commit), ``schema`` and ``store``
(tables and queries: tasks, leases, de-dup, dead letters), ``records`` (values the store
returns), ``bucket`` (token bucket, 429/503 throttle), ``clock`` (injectable time),
``attempt`` (one HTTP attempt), ``dispatcher`` (per-queue scheduling and retries) and
``engine`` (:class:`LocalEngine`), ``admin`` (its QueueAdmin operations).
"""
