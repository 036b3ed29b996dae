"""The Grafana dashboard and Prometheus alert rules query only metrics the proxy exports,
promtool (Prometheus' own) passes them and the metrics, and the queue gauges and the
duplicate count mean what the panels and alerts take them to."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from proxy.config.loading import settings_from_dict
from tests.support import promtool as promtool_support
from tests.support.backend import RecordingBackend, run_backend
from tests.support.servers import run_proxy, wait_for

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
ALERTS = ROOT / "monitoring" / "alerts.yaml"
ALERTS_TESTS = ROOT / "monitoring" / "alerts.test.yaml"
METRIC = re.compile(r"\b(ingest_proxy_[a-z_]+)\b")


def _expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load(ALERTS.read_text())
    exprs += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    return exprs


def test_files_parse_and_have_queries() -> None:
    """The dashboard is JSON with panels, the rules YAML with alerts, each with a query."""
    exprs = _expressions()
    assert len(exprs) >= 10
    assert all(METRIC.search(e) for e in exprs)


@pytest.fixture(scope="module")
def busy_metrics(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real proxy's /metrics after traffic of every kind: accepted, refused, delivered,
    dead-lettered, delayed, duplicate."""
    backend = RecordingBackend(responder=lambda r: 500 if r.path == "/fail" else 200)
    with run_backend(backend):
        settings = settings_from_dict(
            {
                "queues": [{"name": "q", "target": backend.url, "retry": {"max_attempts": 1}}],
                "local": {"db": str(tmp_path_factory.mktemp("busy") / "m.db")},
            }
        )
        with run_proxy(settings) as proxy:
            assert httpx.post(f"{proxy.url}/ok", content=b"x").status_code == 202
            assert httpx.post(f"{proxy.url}/fail", content=b"x").status_code == 202
            assert httpx.post(f"{proxy.url}/x", headers={"X-Delay": "no"}).status_code == 400
            assert httpx.post(f"{proxy.url}/later", headers={"X-Delay": "2h"}).status_code == 202
            for _ in range(2):
                keyed = httpx.post(f"{proxy.url}/ok", headers={"Idempotency-Key": "k"})
                assert keyed.status_code == 202
            backend.wait_for_count(3, 30)
            metrics_url = f"{proxy.admin_url}/metrics"
            wait_for(
                lambda: 'ingest_proxy_dead_letters{queue="q"} 1.0' in httpx.get(metrics_url).text,
                30,
            )
            return httpx.get(metrics_url).text


def test_every_queried_metric_exists_on_metrics(busy_metrics: str) -> None:
    """After some traffic (accepted, refused, delivered, dead-lettered), /metrics carries
    every metric name the dashboard and alerts query."""
    exported = set(METRIC.findall(busy_metrics))
    queried = {name for expr in _expressions() for name in METRIC.findall(expr)}
    assert queried, "no metric names found in the queries"
    assert queried <= exported, sorted(queried - exported)


def test_promtool_finds_nothing_wrong_with_metrics(busy_metrics: str, promtool: Path) -> None:
    """Prometheus' own linter (promtool check metrics) passes a busy proxy's /metrics."""
    assert "ingest_proxy_scheduled_tasks" in busy_metrics
    _promtool(promtool, "check", "metrics", stdin=busy_metrics)


def test_promtool_checks_the_alert_rules(promtool: Path) -> None:
    """promtool check rules accepts alerts.yaml."""
    _promtool(promtool, "check", "rules", str(ALERTS))


def test_promtool_unit_tests_of_the_alerts_pass(promtool: Path) -> None:
    """promtool test rules passes monitoring/alerts.test.yaml: a 2 h-delayed task alone
    fires no alert, a task 2 h overdue fires IngestProxyOldestTaskTooOld, scheduled tasks
    piling up are no growing backlog and due ones are."""
    tests = yaml.safe_load(ALERTS_TESTS.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    fired = {
        (case["alertname"], bool(case["exp_alerts"]))
        for group in tests["tests"]
        for case in group["alert_rule_test"]
    }
    assert {
        ("IngestProxyOldestTaskTooOld", False),
        ("IngestProxyOldestTaskTooOld", True),
        ("IngestProxyBacklogGrowing", False),
        ("IngestProxyBacklogGrowing", True),
    } <= fired
    _promtool(promtool, "test", "rules", str(ALERTS_TESTS))


def test_a_delayed_task_is_scheduled_not_late(tmp_path: Path) -> None:
    """On a real proxy's /metrics: a task sent with X-Delay: 2h is in the depth and the
    scheduled tasks, and its queue's oldest-task age stays 0 while a due task of a paused
    queue, sent after it, is late by the second."""
    backend = RecordingBackend()
    token = "metrics-admin-token"
    with run_backend(backend):
        settings = settings_from_dict(
            {
                "queues": [
                    {"name": "later", "target": backend.url},
                    {"name": "held", "target": backend.url},
                ],
                "routes": [{"prefix": "/held", "queue": "held"}],
                "local": {"db": str(tmp_path / "m.db")},
                "server": {"admin_token": token},
            }
        )
        with run_proxy(settings) as proxy:
            admin = httpx.Client(
                base_url=proxy.admin_url, headers={"authorization": f"Bearer {token}"}, timeout=10
            )
            assert admin.post("/queues/held/pause").is_success
            delayed = httpx.post(f"{proxy.url}/x", headers={"X-Delay": "2h"}, timeout=10)
            assert delayed.status_code == 202
            assert httpx.post(f"{proxy.url}/held/x", timeout=10).status_code == 202

            def held_late() -> bool:
                age = _sample(admin.get("/metrics").text, "oldest_task_age_seconds", "held")
                return age >= 1.0

            wait_for(held_late, 30, message="the paused queue's task never became late")
            text = admin.get("/metrics").text
    assert backend.received == []
    later = [_sample(text, name, "later") for name in _QUEUE_GAUGES]
    held = [_sample(text, name, "held") for name in _QUEUE_GAUGES]
    assert later == [1.0, 1.0, 0.0]
    assert held[:2] == [1.0, 0.0]
    assert held[2] >= 1.0


def test_duplicates_are_not_accepted_tasks(tmp_path: Path) -> None:
    """On a real proxy: repeated Idempotency-Keys are 202s counted as duplicates, not as
    tasks stored (commit batch sizes) nor accepted, so accepted (202s minus duplicates,
    the dashboard's line) meets delivered."""
    backend = RecordingBackend()
    with run_backend(backend):
        settings = settings_from_dict(
            {
                "queues": [{"name": "q", "target": backend.url}],
                "local": {"db": str(tmp_path / "m.db")},
            }
        )
        with run_proxy(settings) as proxy:
            for key in ("a", "a", "a", "b", "b", None):
                headers = {"Idempotency-Key": key} if key else {}
                answer = httpx.post(f"{proxy.url}/x", headers=headers, timeout=10)
                assert answer.status_code == 202
            backend.wait_for_count(3, 30)
            metrics_url = f"{proxy.admin_url}/metrics"

            def delivered() -> float:
                return _sample(httpx.get(metrics_url).text, "dispatches_total", "q", "2xx")

            wait_for(lambda: delivered() == 3.0, 30)
            text = httpx.get(metrics_url).text
    answered = _value(text, "ingest_proxy_requests_total", {"queue": "q", "code": "202"})
    duplicates = _sample(text, "duplicate_requests_total", "q")
    assert (answered, duplicates) == (6.0, 3.0)
    assert answered - duplicates == _sample(text, "dispatches_total", "q", "2xx")
    assert _value(text, "ingest_proxy_commit_batch_size_sum", {}) == 3.0


_QUEUE_GAUGES = ("queue_depth", "scheduled_tasks", "oldest_task_age_seconds")


def _sample(text: str, name: str, queue: str, status_class: str | None = None) -> float:
    """The sample ``ingest_proxy_<name>`` of ``queue`` (and ``status_class``) in ``text``."""
    labels = {"queue": queue}
    if status_class is not None:
        labels["status_class"] = status_class
    return _value(text, f"ingest_proxy_{name}", labels)


def _value(text: str, sample: str, labels: dict[str, str]) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == sample and found.labels == labels:
                return float(found.value)
    raise AssertionError(f"no sample {sample}{labels} on /metrics")


@pytest.fixture(scope="module")
def promtool() -> Path:
    """Prometheus' promtool; the test fails (never skips) when it cannot be had."""
    try:
        return promtool_support.ensure_installed()
    except promtool_support.PromtoolMissingError as exc:
        pytest.fail(f"promtool is needed and could not be installed: {exc}")


def _promtool(path: Path, *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [str(path), *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}: {done.stdout}{done.stderr}"


def test_a_fresh_proxy_exports_process_metrics_and_alerted_counters_at_zero(
    tmp_path: Path,
) -> None:
    """Before any traffic: the process, platform and GC collectors' series are there, the
    counters alerts take rate() of are at 0 for their reasons (so the first error counts),
    and no *_created series is."""
    settings = settings_from_dict(
        {
            "queues": [{"name": "q", "target": "http://127.0.0.1:9"}],
            "local": {"db": str(tmp_path / "m.db")},
        }
    )
    with run_proxy(settings) as proxy:
        text = httpx.get(f"{proxy.admin_url}/metrics", timeout=10).text
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert f"\n{name}" in text, name
    assert "process_open_fds" in text
    for reason in ("engine_unavailable", "backlog_full", "internal_error"):
        assert f'ingest_proxy_enqueue_errors_total{{reason="{reason}"}} 0.0' in text
    assert 'ingest_proxy_dispatches_total{queue="q",status_class="5xx"} 0.0' in text
    assert "_created" not in text
