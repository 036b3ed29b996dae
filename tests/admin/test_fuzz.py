"""Schemathesis fuzzes the admin API from its own OpenAPI document: no 5xx, ever.

A real proxy (embedded engine, real SQLite file) with a few tasks and a dead letter is the
target; the run is bounded by ``--max-time``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from proxy.config.loading import settings_from_dict
from tests.support.backend import RecordingBackend, run_backend
from tests.support.servers import run_proxy, wait_for

TOKEN = "schemathesis-token-0123456789"
MAX_SECONDS = 20


def _schemathesis() -> str:
    found = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert found, "schemathesis is part of the test extra"
    return found


def test_admin_api_never_answers_5xx(tmp_path: Path) -> None:
    """Generated calls to every admin operation (valid and invalid) never get a 5xx."""
    config = tmp_path / "schemathesis.toml"
    config.write_text('[parameters]\n"path.queue" = "q"\n')
    backend = RecordingBackend(responder=lambda r: 500 if r.path == "/dead" else 200)
    with run_backend(backend):
        settings = settings_from_dict(
            {
                "queues": [
                    {"name": "q", "target": backend.url, "retry": {"max_attempts": 1}, "rate": 5}
                ],
                "local": {"db": str(tmp_path / "fuzz.db")},
                "server": {"admin_token": TOKEN},
            }
        )
        with run_proxy(settings) as proxy:
            assert httpx.post(f"{proxy.url}/dead", content=b"x").status_code == 202
            dead_url = f"{proxy.admin_url}/queues/q/dead-letters"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            wait_for(lambda: httpx.get(dead_url, headers=auth).json()["dead_letters"], 30)
            for n in range(5):
                httpx.post(f"{proxy.url}/later", headers={"X-Delay": "1h"}, content=b"%d" % n)
            done = subprocess.run(
                [
                    _schemathesis(),
                    "--config-file",
                    str(config),
                    "run",
                    f"{proxy.admin_url}/openapi.json",
                    "--checks",
                    "not_a_server_error",
                    "--max-time",
                    str(MAX_SECONDS),
                    "--workers",
                    "1",
                    "--seed",
                    "1",
                    "-H",
                    f"Authorization: Bearer {TOKEN}",
                ],
                capture_output=True,
                text=True,
                timeout=MAX_SECONDS * 6,
                check=False,
            )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
