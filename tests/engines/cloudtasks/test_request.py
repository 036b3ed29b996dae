"""The task an Envelope becomes on the Cloud Tasks engine (proxy/engines/cloudtasks/request.py):
its token request, by the queue's auth."""

from __future__ import annotations

from typing import Any

from google.cloud.tasks_v2 import CreateTaskRequest

from proxy.config.loading import settings_from_dict
from proxy.engines.cloudtasks.request import create_task_request, queue_targets
from proxy.envelope import Envelope

EMAIL = "invoker@p.iam.gserviceaccount.com"


def _task(queue: dict[str, Any], engine_email: str | None = None) -> Any:
    cloudtasks: dict[str, Any] = {"project": "p", "location": "l"}
    if engine_email:
        cloudtasks["service_account_email"] = engine_email
    settings = settings_from_dict(
        {"engine": "cloudtasks", "cloudtasks": cloudtasks, "queues": [{"name": "q", **queue}]}
    )
    envelope = Envelope(id="t1", queue="q", method="POST", path="/x", query="", headers=(),
                        body=b"{}", received_at=0.0)  # fmt: skip
    request: CreateTaskRequest = create_task_request(queue_targets(settings)["q"], envelope)
    return request.task.http_request


def test_a_queue_with_an_account_asks_for_an_oidc_token_for_the_target_origin() -> None:
    """The audience is the target's origin, the account the queue's."""
    http = _task({"target": "https://b.run.app/api", "service_account_email": EMAIL})
    assert (http.oidc_token.service_account_email, http.oidc_token.audience) == (
        EMAIL,
        "https://b.run.app",
    )
    assert not http.oauth_token.service_account_email


def test_an_oauth_queue_asks_for_an_access_token_with_its_scope() -> None:
    """auth = "oauth": an OAuthToken with the scope, and no OIDC token."""
    http = _task(
        {"target": "https://tasks.googleapis.com", "auth": "oauth", "scope": "https://s"},
        engine_email=EMAIL,
    )
    assert (http.oauth_token.service_account_email, http.oauth_token.scope) == (EMAIL, "https://s")
    assert not http.oidc_token.service_account_email


def test_auth_none_asks_for_no_token_even_with_an_engine_wide_account() -> None:
    """The engine's service_account_email does not put a token on a queue that says none."""
    http = _task({"target": "https://b.example", "auth": "none"}, engine_email=EMAIL)
    assert not http.oidc_token.service_account_email
    assert not http.oauth_token.service_account_email
