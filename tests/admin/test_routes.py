"""Admin listener: health, readiness and Prometheus metrics on their own port."""

from __future__ import annotations

import httpx

from proxy.app import create_admin_app, create_app
from proxy.config.loading import settings_from_dict
from proxy.errors import EngineUnavailableError
from tests.support.engines import RecordingEngine
from tests.support.servers import serve_in_thread

SETTINGS = settings_from_dict({"queues": [{"name": "q1", "target": "http://127.0.0.1:9"}]})


def test_health_ready_and_metrics() -> None:
    """/healthz and /readyz answer 200 once the engine runs; /metrics speaks Prometheus."""
    engine = RecordingEngine()
    app = create_app(SETTINGS, engine=engine)
    with (
        serve_in_thread(app) as url,
        serve_in_thread(create_admin_app(app), lifespan="off") as admin,
    ):
        assert httpx.get(f"{admin}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{admin}/readyz")
        assert ready.status_code == 200
        assert ready.json()["engine"] == "recording"
        assert httpx.post(f"{url}/x", content=b"abc").status_code == 202
        assert httpx.post(f"{url}/x", headers={"X-Delay": "never"}).status_code == 400
        metrics = httpx.get(f"{admin}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        assert 'ingest_proxy_requests_total{code="202",queue="q1"} 1.0' in text
        assert 'ingest_proxy_requests_total{code="400",queue="q1"} 1.0' in text
        assert 'ingest_proxy_enqueue_errors_total{reason="invalid_delay"} 1.0' in text
        assert 'ingest_proxy_enqueue_seconds_count{engine="recording"} 1.0' in text
        assert "ingest_proxy_request_body_bytes_sum 3.0" in text
        assert "ingest_proxy_requests_in_flight 0.0" in text


def test_ready_fails_when_the_engine_cannot_persist() -> None:
    """/readyz is 503 with a JSON reason while the engine cannot persist; /healthz stays 200."""
    engine = RecordingEngine(fail_with=EngineUnavailableError("database is locked", retry_after=1))
    app = create_app(SETTINGS, engine=engine)
    with serve_in_thread(app), serve_in_thread(create_admin_app(app), lifespan="off") as admin:
        ready = httpx.get(f"{admin}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"error": "engine_unavailable", "detail": "database is locked"}
        assert ready.headers["retry-after"] == "1"
        assert httpx.get(f"{admin}/healthz").status_code == 200


def test_ready_fails_before_start_and_while_draining() -> None:
    """Before the lifespan started the engine, and once shutdown began, /readyz is 503."""
    app = create_app(SETTINGS, engine=RecordingEngine())
    with serve_in_thread(create_admin_app(app), lifespan="off") as admin:
        assert httpx.get(f"{admin}/readyz").status_code == 503
        app.state.runtime.started = True
        assert httpx.get(f"{admin}/readyz").status_code == 200
        app.state.runtime.draining = True
        response = httpx.get(f"{admin}/readyz")
        assert response.status_code == 503
        assert "shutting down" in response.json()["detail"]


def test_unknown_admin_path_and_method_get_json_errors() -> None:
    """Unknown admin paths get 404 and wrong methods 405, as JSON errors."""
    app = create_app(SETTINGS, engine=RecordingEngine())
    with serve_in_thread(create_admin_app(app), lifespan="off") as admin:
        response = httpx.get(f"{admin}/nope")
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        wrong = httpx.post(f"{admin}/healthz")
        assert wrong.status_code == 405
        assert wrong.json()["error"] == "method_not_allowed"


def test_the_spool_of_a_proxy_without_one_is_not_found() -> None:
    """GET /spool on an engine with no spool: 404 as JSON (a missing resource, not a 5xx)."""
    settings = settings_from_dict(
        {
            "queues": [{"name": "q1", "target": "http://127.0.0.1:9"}],
            "server": {"admin_token": "t0ken-for-the-test"},
        }
    )
    app = create_app(settings, engine=RecordingEngine())
    with serve_in_thread(create_admin_app(app), lifespan="off") as admin:
        response = httpx.get(
            f"{admin}/spool", headers={"Authorization": "Bearer t0ken-for-the-test"}
        )
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
        assert "cloudtasks.spool" in response.json()["detail"]
