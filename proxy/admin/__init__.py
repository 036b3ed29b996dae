"""The admin listener's application: ``routes`` (health, readiness, metrics, queues,
tasks and dead letters, on a port of its own) and ``openapi`` (its description)."""
