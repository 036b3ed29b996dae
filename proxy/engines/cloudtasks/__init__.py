"""The Cloud Tasks engine: ``engine`` (CreateTask on the ingest path, readiness),
``admin`` (the admin API's calls), ``queues`` (``ingest-proxy queues apply``), ``request``
(the task an Envelope becomes), ``channel`` (the gRPC channels) and ``errors`` (the one
place where grpc, google-api-core and google-auth errors become the proxy's)."""
