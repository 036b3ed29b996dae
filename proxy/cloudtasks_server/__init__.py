"""A local Cloud Tasks: the ``google.cloud.tasks.v2.CloudTasks`` gRPC API served on top of
the embedded engine's store and dispatcher (``ingest-proxy cloudtasks-server``).

A development and test tool: tasks are delivered to their own URLs, OIDC tokens are
unsigned local stand-ins, and there is no authentication, so it binds 127.0.0.1 by
default. Modules: ``validation`` (names, limits, errors), ``queues`` and ``tasks``
(resources <-> stored rows), ``runtime`` (store, queue registry, dispatchers),
``dispatch`` (an attempt's request and records, Cloud Tasks semantics), ``queue_api``
and ``task_api`` (the RPCs), ``rest`` (the same over REST), ``server`` (gRPC wiring).
Its SQL is the store's: ``proxy/engines/local/store/server.py``.
"""
