"""CLI verbs (queues, tasks, dlq) against a running proxy's admin API (embedded engine)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from proxy.cli.main import main
from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from tests.support.backend import RecordingBackend, run_backend
from tests.support.servers import RunningProxy, run_proxy, wait_for

TOKEN = "cli-admin-token-0123456789"
TIMEOUT = 30.0


def _settings(tmp_path: Path, target: str) -> Settings:
    return settings_from_dict(
        {
            "queues": [{"name": "q", "target": target, "rate": 50, "retry": {"max_attempts": 1}}],
            "local": {"db": str(tmp_path / "cli.db")},
            "server": {"admin_token": TOKEN, "shutdown_grace": 2},
        }
    )


def _cli(proxy: RunningProxy, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status = main([*argv[:2], *argv[2:], "--admin-url", proxy.admin_url])
    out = capsys.readouterr()
    assert status == 0, out.err
    return out.out


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_PROXY_ADMIN_TOKEN", TOKEN)


@pytest.mark.usefixtures("token")
def test_pause_list_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`queues pause` holds deliveries (shown by `queues list` and `tasks list`);
    `queues resume` sends them."""
    with run_backend() as backend, run_proxy(_settings(tmp_path, backend.url)) as proxy:
        _cli(proxy, capsys, "queues", "pause", "q")
        for n in range(3):
            assert httpx.post(f"{proxy.url}/p{n}", content=b"x").status_code == 202
        listing = _cli(proxy, capsys, "queues", "list")
        header, row = listing.splitlines()[:2]
        assert header.split()[:3] == ["NAME", "STATE", "TASKS"]
        assert row.split()[:3] == ["q", "paused", "3"]
        tasks = json.loads(_cli(proxy, capsys, "tasks", "list", "q", "--json"))["tasks"]
        assert sorted(t["path"] for t in tasks) == ["/p0", "/p1", "/p2"]
        assert backend.received == []
        _cli(proxy, capsys, "queues", "resume", "q")
        backend.wait_for_count(3, TIMEOUT)


@pytest.mark.usefixtures("token")
def test_dead_letters_list_replay_drop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A task out of attempts shows in `dlq list`; `dlq replay` delivers it once the
    backend is fixed; `dlq drop` deletes one for good."""
    failing = {"on": True}
    backend = RecordingBackend(responder=lambda r: 500 if failing["on"] else 200)
    with run_backend(backend), run_proxy(_settings(tmp_path, backend.url)) as proxy:
        for path in ("/a", "/b"):
            assert httpx.post(f"{proxy.url}{path}", content=b"x").status_code == 202

        def dead() -> list[dict[str, object]]:
            out = _cli(proxy, capsys, "dlq", "list", "q", "--json")
            letters: list[dict[str, object]] = json.loads(out)["dead_letters"]
            return letters

        wait_for(lambda: len(dead()) == 2, TIMEOUT, message="two dead letters")
        letters = {str(d["path"]): str(d["id"]) for d in dead()}
        assert all(d["last_status"] == 500 for d in dead())
        failing["on"] = False
        _cli(proxy, capsys, "dlq", "replay", "q", letters["/a"])
        _cli(proxy, capsys, "dlq", "drop", "q", letters["/b"])
        wait_for(
            lambda: any(r.path == "/a" and r.header("x-cloudtasks-taskretrycount") == "0"
                        for r in backend.received),
            TIMEOUT,
        )  # fmt: skip
        assert dead() == []


def test_admin_refusal_is_one_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the token the CLI reports the API's refusal on stderr and exits 1."""
    monkeypatch.delenv("INGEST_PROXY_ADMIN_TOKEN", raising=False)
    with run_backend() as backend, run_proxy(_settings(tmp_path, backend.url)) as proxy:
        status = main(["queues", "pause", "q", "--admin-url", proxy.admin_url])
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("ingest-proxy: 401: ")
