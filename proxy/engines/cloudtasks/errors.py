"""The Cloud Tasks engine's one error boundary: every error of grpc, google-api-core and
google-auth becomes an error of the proxy's tree here, with one Retry-After policy.

- Transient codes (:data:`TRANSIENT`) are worth another attempt; once the attempts are
  over they are :class:`EngineUnavailableError` with :func:`retry_after` seconds.
- ``INVALID_ARGUMENT`` on CreateTask is :class:`TaskRejectedError` (413 for "too large",
  else 400): the request itself is refused.
- ``NOT_FOUND`` of a task or queue named by an admin call is :class:`NotFoundError`.
- Everything else is :class:`EngineUnavailableError` (503): nothing was stored or changed;
  for set-up problems (missing queue, denied identity) with a sentence saying what to fix.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import grpc
from google.api_core import exceptions as core_exceptions
from google.auth import exceptions as auth_exceptions

from proxy.errors import (
    ConfigError,
    EngineUnavailableError,
    NotFoundError,
    ProxyError,
    TaskRejectedError,
)

__all__ = [
    "TRANSIENT",
    "admin_error",
    "code_name",
    "create_task_error",
    "credentials_needed",
    "from_rpc_error",
    "gave_up",
    "grpc_code",
    "retry_after",
]

# CANCELLED as an RpcError comes from the other side (a server shutting down with the call
# in flight; our own cancellations raise asyncio.CancelledError): whether the task landed
# is unknown, and another attempt with the same name is safe (ALREADY_EXISTS is success).
TRANSIENT = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
    }
)
RETRY_AFTER_TRANSIENT = 2.0  # seconds
RETRY_AFTER_QUOTA = 5.0
RETRY_AFTER_SETUP = 30.0  # queue missing, permissions: a person has to act
_SETUP = frozenset(
    {
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
_ENQUEUER = "Cloud Tasks Enqueuer (roles/cloudtasks.enqueuer)"
_SA_USER = "Service Account User (roles/iam.serviceAccountUser)"

# A typed alias of an untyped google-api-core helper.
from_rpc_error: Callable[[grpc.RpcError], core_exceptions.GoogleAPICallError] = (
    core_exceptions.from_grpc_error
)


def grpc_code(exc: core_exceptions.GoogleAPICallError) -> grpc.StatusCode | None:
    """The gRPC status code of ``exc``, ``None`` when it has none (an HTTP-only error)."""
    code = exc.grpc_status_code
    return code if isinstance(code, grpc.StatusCode) else None


def code_name(exc: BaseException) -> str:
    """The status code's name (``UNAVAILABLE``), else the exception's type name."""
    if isinstance(exc, core_exceptions.GoogleAPICallError):
        code = grpc_code(exc)
        if code is not None:
            return code.name
    return type(exc).__name__


def retry_after(code: grpc.StatusCode | None) -> float:
    """Seconds a client should wait after a failure with ``code``: long when a person has
    to fix something, medium for quota, short otherwise."""
    if code in _SETUP:
        return RETRY_AFTER_SETUP
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return RETRY_AFTER_QUOTA
    return RETRY_AFTER_TRANSIENT


def gave_up(exc: core_exceptions.GoogleAPICallError, budget: float) -> EngineUnavailableError:
    """Transient failures until the enqueue deadline (``budget`` seconds) ran out."""
    return EngineUnavailableError(
        f"Cloud Tasks did not accept the task within {budget:g}s ({code_name(exc)}); "
        "nothing was stored, retry later.",
        retry_after=retry_after(grpc_code(exc)),
    )


def create_task_error(exc: core_exceptions.GoogleAPICallError, queue: str) -> ProxyError:
    """A CreateTask failure that is not worth another attempt, for the queue named
    ``queue``."""
    code = grpc_code(exc)
    message = exc.message or ""
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if "too large" in message.lower():
            return TaskRejectedError(
                f"Cloud Tasks refused the task as too large ({message}); send a smaller request.",
                status=413,
                code="task_too_large",
            )
        return TaskRejectedError(f"Cloud Tasks refused the task: {message}", status=400)
    if code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
        detail = (
            f"Cloud Tasks queue {queue!r} is missing, paused or disabled; nothing was "
            "stored. Create or resume the queue."
        )
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        detail = (
            f"Cloud Tasks denied the proxy's identity on queue {queue!r}: it needs the "
            f"{_ENQUEUER} role on the queue, and {_SA_USER} on the OIDC service account."
        )
    elif code == grpc.StatusCode.UNAUTHENTICATED:
        detail = (
            "Cloud Tasks did not accept the proxy's credentials; give the proxy a valid "
            f"identity with the {_ENQUEUER} role."
        )
    else:
        detail = f"Cloud Tasks answered {code_name(exc)}; nothing was stored, retry later."
    return EngineUnavailableError(detail, retry_after=retry_after(code))


def admin_error(what: str, exc: Exception) -> ProxyError:
    """A failed admin call (queue or task ``what``): 404 when Cloud Tasks does not know
    it, else 503 with the policy's Retry-After. ``exc`` is a ``GoogleAPICallError`` or a
    ``RetryError`` (the client library's retries ran out)."""
    if isinstance(exc, core_exceptions.NotFound):
        return NotFoundError(f"{what}: not found in Cloud Tasks ({exc.message}).")
    if isinstance(exc, core_exceptions.RetryError):
        return EngineUnavailableError(
            f"{what}: Cloud Tasks did not answer ({exc.cause}).",
            retry_after=RETRY_AFTER_TRANSIENT,
        )
    if isinstance(exc, core_exceptions.GoogleAPICallError):
        return EngineUnavailableError(
            f"{what}: Cloud Tasks refused the call ({exc.message}).",
            retry_after=retry_after(grpc_code(exc)),
        )
    raise TypeError(f"not an error of the Cloud Tasks client: {exc!r}")


@contextlib.contextmanager
def credentials_needed() -> Iterator[None]:
    """Turn google-auth's "no credentials" into a :class:`ConfigError` saying what to set."""
    try:
        yield
    except auth_exceptions.DefaultCredentialsError as exc:
        raise ConfigError(
            "cloudtasks",
            f"no Google credentials found ({exc}); run with a service account on Google "
            "Cloud, set GOOGLE_APPLICATION_CREDENTIALS, or set CLOUD_TASKS_EMULATOR_HOST "
            "to use the emulator",
        ) from None
