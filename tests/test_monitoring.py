"""The Grafana dashboard and Prometheus alert rules query only metrics the proxy exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import yaml

from proxy.config.loading import settings_from_dict
from tests.support.backend import RecordingBackend, run_backend
from tests.support.servers import run_proxy, wait_for

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "monitoring" / "grafana-dashboard.json"
ALERTS = ROOT / "monitoring" / "alerts.yaml"
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


def test_every_queried_metric_exists_on_metrics(tmp_path: Path) -> None:
    """After some traffic (accepted, refused, delivered, dead-lettered), /metrics carries
    every metric name the dashboard and alerts query."""
    backend = RecordingBackend(responder=lambda r: 500 if r.path == "/fail" else 200)
    with run_backend(backend):
        settings = settings_from_dict(
            {
                "queues": [{"name": "q", "target": backend.url, "retry": {"max_attempts": 1}}],
                "local": {"db": str(tmp_path / "m.db")},
            }
        )
        with run_proxy(settings) as proxy:
            assert httpx.post(f"{proxy.url}/ok", content=b"x").status_code == 202
            assert httpx.post(f"{proxy.url}/fail", content=b"x").status_code == 202
            assert httpx.post(f"{proxy.url}/x", headers={"X-Delay": "no"}).status_code == 400
            backend.wait_for_count(2, 30)
            metrics_url = f"{proxy.admin_url}/metrics"
            wait_for(
                lambda: 'ingest_proxy_dead_letters{queue="q"} 1.0' in httpx.get(metrics_url).text,
                30,
            )
            exported = set(METRIC.findall(httpx.get(metrics_url).text))
    queried = {name for expr in _expressions() for name in METRIC.findall(expr)}
    assert queried, "no metric names found in the queries"
    assert queried <= exported, sorted(queried - exported)


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
