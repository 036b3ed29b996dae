"""The ``ingest-proxy`` command: ``main`` (the parser, ``serve``, ``hash-key``,
``queues apply``, ``cloudtasks-server``), ``admin`` (the verbs that call the admin API)
and ``demo`` (a spike smoothed on loopback)."""
