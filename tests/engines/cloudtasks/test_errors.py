"""The Cloud Tasks engine's error boundary: each google-api-core error becomes the proxy
error (status, code, Retry-After) the policy names, built the way the client library
builds them from a gRPC status."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.auth import exceptions as auth_exceptions

from proxy.engines.cloudtasks import errors
from proxy.errors import ConfigError, EngineUnavailableError, NotFoundError, TaskRejectedError


def _error(code: grpc.StatusCode, message: str = "it failed") -> core_exceptions.GoogleAPICallError:
    error: core_exceptions.GoogleAPICallError = core_exceptions.from_grpc_status(code, message)
    return error


@pytest.mark.parametrize(
    ("code", "seconds"),
    [
        (grpc.StatusCode.UNAVAILABLE, errors.RETRY_AFTER_TRANSIENT),
        (grpc.StatusCode.CANCELLED, errors.RETRY_AFTER_TRANSIENT),
        (grpc.StatusCode.INTERNAL, errors.RETRY_AFTER_TRANSIENT),
        (grpc.StatusCode.DEADLINE_EXCEEDED, errors.RETRY_AFTER_TRANSIENT),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, errors.RETRY_AFTER_QUOTA),
        (grpc.StatusCode.NOT_FOUND, errors.RETRY_AFTER_SETUP),
        (grpc.StatusCode.PERMISSION_DENIED, errors.RETRY_AFTER_SETUP),
        (grpc.StatusCode.UNAUTHENTICATED, errors.RETRY_AFTER_SETUP),
        (None, errors.RETRY_AFTER_TRANSIENT),
    ],
)
def test_retry_after_is_long_for_setup_problems_and_medium_for_quota(
    code: grpc.StatusCode | None, seconds: float
) -> None:
    assert errors.retry_after(code) == seconds


def test_the_transient_codes_are_the_ones_worth_another_attempt() -> None:
    assert grpc.StatusCode.UNAVAILABLE in errors.TRANSIENT
    # A server that shut down with the call in flight: it may or may not have landed.
    assert grpc.StatusCode.CANCELLED in errors.TRANSIENT
    assert grpc.StatusCode.RESOURCE_EXHAUSTED in errors.TRANSIENT
    assert grpc.StatusCode.INVALID_ARGUMENT not in errors.TRANSIENT
    assert grpc.StatusCode.PERMISSION_DENIED not in errors.TRANSIENT


def test_a_too_large_task_is_413_and_another_invalid_argument_400() -> None:
    large = errors.create_task_error(
        _error(grpc.StatusCode.INVALID_ARGUMENT, "Task size too large"), "q"
    )
    assert isinstance(large, TaskRejectedError)
    assert (large.status, large.code) == (413, "task_too_large")
    other = errors.create_task_error(_error(grpc.StatusCode.INVALID_ARGUMENT, "bad url"), "q")
    assert isinstance(other, TaskRejectedError)
    assert other.status == 400
    assert "bad url" in other.detail


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (grpc.StatusCode.NOT_FOUND, "Create or resume the queue"),
        (grpc.StatusCode.FAILED_PRECONDITION, "Create or resume the queue"),
        (grpc.StatusCode.PERMISSION_DENIED, "roles/cloudtasks.enqueuer"),
        (grpc.StatusCode.UNAUTHENTICATED, "valid identity"),
    ],
)
def test_a_set_up_problem_on_create_task_says_what_to_fix(
    code: grpc.StatusCode, words: str
) -> None:
    error = errors.create_task_error(_error(code), "orders")
    assert isinstance(error, EngineUnavailableError)
    assert error.status == 503
    assert words in error.detail
    assert error.retry_after == errors.RETRY_AFTER_SETUP


def test_any_other_create_task_failure_is_503_naming_the_code() -> None:
    error = errors.create_task_error(_error(grpc.StatusCode.ABORTED), "q")
    assert isinstance(error, EngineUnavailableError)
    assert "ABORTED" in error.detail
    assert error.retry_after == errors.RETRY_AFTER_TRANSIENT


def test_giving_up_names_the_budget_and_the_last_code() -> None:
    error = errors.gave_up(_error(grpc.StatusCode.RESOURCE_EXHAUSTED), 2.0)
    assert "within 2s" in error.detail
    assert "RESOURCE_EXHAUSTED" in error.detail
    assert error.retry_after == errors.RETRY_AFTER_QUOTA


def test_an_admin_call_on_something_cloud_tasks_does_not_know_is_404() -> None:
    error = errors.admin_error("Task t1", _error(grpc.StatusCode.NOT_FOUND, "no such task"))
    assert isinstance(error, NotFoundError)
    assert error.status == 404
    assert error.detail.startswith("Task t1: ")


def test_an_admin_call_refused_is_503_with_the_same_policy_as_enqueue() -> None:
    denied = errors.admin_error("Queue q", _error(grpc.StatusCode.PERMISSION_DENIED))
    assert isinstance(denied, EngineUnavailableError)
    assert denied.retry_after == errors.RETRY_AFTER_SETUP
    busy = errors.admin_error("Queue q", _error(grpc.StatusCode.UNAVAILABLE))
    assert busy.retry_after == errors.RETRY_AFTER_TRANSIENT


def test_an_admin_call_whose_retries_ran_out_is_503() -> None:
    cause = _error(grpc.StatusCode.UNAVAILABLE)
    error = errors.admin_error("Queues", core_exceptions.RetryError("timed out", cause))
    assert isinstance(error, EngineUnavailableError)
    assert "did not answer" in error.detail


def test_only_client_library_errors_are_translated() -> None:
    with pytest.raises(TypeError):
        errors.admin_error("Queue q", ValueError("not ours"))


def test_code_name_falls_back_to_the_type_name() -> None:
    assert errors.code_name(_error(grpc.StatusCode.UNAVAILABLE)) == "UNAVAILABLE"
    assert errors.code_name(ValueError()) == "ValueError"


def test_missing_credentials_become_a_config_error_saying_what_to_set() -> None:
    with pytest.raises(ConfigError) as caught, errors.credentials_needed():
        raise auth_exceptions.DefaultCredentialsError("none found")
    assert "GOOGLE_APPLICATION_CREDENTIALS" in str(caught.value)
    assert "CLOUD_TASKS_EMULATOR_HOST" in str(caught.value)
