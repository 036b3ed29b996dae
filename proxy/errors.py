"""The one error tree of ingest-proxy.

::

    ProxyError                      every error the proxy raises on purpose
    ├── ConfigError                 bad configuration; the CLI exits with status 2
    ├── RequestError                the client's request cannot be accepted (4xx)
    │   ├── BadRequestError         400
    │   ├── UnauthorizedError       401
    │   ├── NotFoundError           404
    │   ├── MethodNotAllowedError   405
    │   ├── RequestTimeoutError     408
    │   ├── BodyTooLargeError       413
    │   ├── UriTooLongError         414
    │   ├── HeadersTooLargeError    431
    │   ├── ForbiddenError          403
    │   └── TransferCodingError     501: a transfer coding the proxy does not implement
    ├── NotSupportedError           501: the engine cannot do this (e.g. Cloud Tasks DLQ)
    └── EngineError                 the engine could not take the task
        ├── EngineUnavailableError  503 + Retry-After: nothing was persisted
        ├── BacklogFullError        429 + Retry-After: the queue is at its bound
        └── TaskRejectedError       the engine refused the task as invalid (4xx)

Library errors (sqlite3, grpc) are translated into this tree where they occur; the
app turns a ``ProxyError`` into an HTTP response in exactly one place.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base of every error the proxy raises on purpose.

    ``code`` is the machine-readable error code sent to clients, ``status`` the HTTP
    status, and ``retry_after`` (seconds) becomes a ``Retry-After`` header when set.
    """

    code = "internal_error"  # a 500 is a bug: the one code for it (SECURITY.md)
    status = 500

    def __init__(self, detail: str, *, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class ConfigError(ProxyError):
    """The configuration is invalid; ``key`` names the offending setting."""

    code = "config_error"

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class RequestError(ProxyError):
    """The client's request cannot be accepted as it is."""

    code = "bad_request"
    status = 400

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        if code is not None:
            self.code = code


class BadRequestError(RequestError):
    """400: a malformed control header or request."""


class UnauthorizedError(RequestError):
    """401: missing or invalid credentials."""

    code = "unauthorized"
    status = 401


class NotFoundError(RequestError):
    """404: no such queue, task or route."""

    code = "not_found"
    status = 404


class MethodNotAllowedError(RequestError):
    """405: a method Cloud Tasks cannot deliver."""

    code = "method_not_allowed"
    status = 405


class RequestTimeoutError(RequestError):
    """408: the body did not arrive within the time limit."""

    code = "request_timeout"
    status = 408


class BodyTooLargeError(RequestError):
    """413: the body is larger than the configured limit."""

    code = "body_too_large"
    status = 413


class UriTooLongError(RequestError):
    """414: the delivery URL would exceed the Cloud Tasks limit."""

    code = "uri_too_long"
    status = 414


class HeadersTooLargeError(RequestError):
    """431: the forwarded headers exceed the configured limit."""

    code = "headers_too_large"
    status = 431


class ForbiddenError(RequestError):
    """403: the operation is switched off by configuration."""

    code = "forbidden"
    status = 403


class TransferCodingError(RequestError):
    """501: the request's body has a transfer coding other than ``chunked`` alone (RFC 9112
    §6.1). The client's choice, not a failure of the proxy, hence a ``RequestError``."""

    code = "transfer_coding_not_supported"
    status = 501


class NotSupportedError(ProxyError):
    """501: the engine cannot offer this operation; the detail says why."""

    code = "not_supported"
    status = 501


class EngineError(ProxyError):
    """The engine could not take the task."""

    code = "engine_error"
    status = 503


class EngineUnavailableError(EngineError):
    """503: the engine cannot persist right now; nothing was persisted."""

    code = "engine_unavailable"
    status = 503


class BacklogFullError(EngineError):
    """429: the queue's backlog is at its configured bound."""

    code = "backlog_full"
    status = 429


class TaskRejectedError(EngineError):
    """The engine refused the task as invalid; ``status`` is a 4xx."""

    code = "task_rejected"
    status = 400

    def __init__(self, detail: str, *, status: int = 400, code: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        if code is not None:
            self.code = code
