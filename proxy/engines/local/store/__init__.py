"""The embedded engine's task store: one SQLite file in WAL mode, and every statement on it.

Modules: ``writer`` (the one writer thread, group commit), ``schema`` (the engine's
tables), ``store`` (:class:`~proxy.engines.local.store.store.Store`: enqueue, lease,
complete, retry, dead-letter, the reads behind the metrics), ``admin`` (the admin API's
reads and writes), ``server`` (the local Cloud Tasks server's tables and statements),
``counters`` (the per-queue counters, changed in one place), ``records`` (the values it
returns) and ``header_codec`` (how a task's headers are stored). No module outside this
package writes SQL on these tables.
"""
