"""The admin API over the Cloud Tasks engine, against the real emulator: pause, resume,
purge, list tasks; dead letters are refused with the reason (Cloud Tasks has none)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from proxy.config.settings import Settings
from tests.support.backend import RecordingBackend
from tests.support.emulator import Emulator, cloudtasks_proxy_settings, unique_queue_name
from tests.support.servers import run_proxy, wait_for

TOKEN = "admin-token-for-tests-0123"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TIMEOUT = 30.0
QUIET = 1.5  # seconds to watch for deliveries that must not happen


def _settings(target: str, queue: str, host: str, token: str | None = TOKEN) -> Settings:
    return cloudtasks_proxy_settings(target=target, queue=queue, host=host, admin_token=token)


def _post(client: httpx.Client, url: str, **kw: Any) -> httpx.Response:
    return client.post(url, headers=AUTH, **kw)


def test_pause_holds_deliveries_and_resume_sends_them(
    emulator: Emulator, backend: RecordingBackend
) -> None:
    """While paused, requests are still accepted (202) but nothing reaches the backend;
    after resume every one is delivered."""
    queue = unique_queue_name()
    emulator.create_queue(queue)
    with (
        run_proxy(_settings(backend.url, queue, emulator.host)) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        paused = _post(client, f"{proxy.admin_url}/queues/{queue}/pause")
        assert paused.status_code == 200
        assert paused.json()["state"] == "paused"
        for n in range(3):
            assert client.post(f"{proxy.url}/p", content=b"%d" % n).status_code == 202
        listing = client.get(f"{proxy.admin_url}/queues/{queue}/tasks", headers=AUTH).json()
        assert len(listing["tasks"]) == 3
        assert {t["path"] for t in listing["tasks"]} == {"/p"}
        time.sleep(QUIET)
        assert backend.received == []
        resumed = _post(client, f"{proxy.admin_url}/queues/{queue}/resume")
        assert resumed.json()["state"] == "running"
        got = backend.wait_for_count(3, TIMEOUT)
    assert sorted(r.body for r in got) == [b"0", b"1", b"2"]


def test_purge_empties_the_queue(emulator: Emulator, backend: RecordingBackend) -> None:
    """Purging a paused queue removes its tasks: nothing is delivered after resume."""
    queue = unique_queue_name()
    emulator.create_queue(queue)
    with (
        run_proxy(_settings(backend.url, queue, emulator.host)) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        _post(client, f"{proxy.admin_url}/queues/{queue}/pause")
        for n in range(2):
            assert client.post(f"{proxy.url}/p", content=b"%d" % n).status_code == 202
        purged = _post(client, f"{proxy.admin_url}/queues/{queue}/purge")
        assert purged.status_code == 200
        assert purged.json() == {"purged": None}
        tasks_url = f"{proxy.admin_url}/queues/{queue}/tasks"
        wait_for(lambda: client.get(tasks_url, headers=AUTH).json()["tasks"] == [], TIMEOUT)
        _post(client, f"{proxy.admin_url}/queues/{queue}/resume")
        assert client.post(f"{proxy.url}/after", content=b"x").status_code == 202
        got = backend.wait_for_count(1, TIMEOUT)
        time.sleep(QUIET)
    assert [r.body for r in backend.received] == [b"x"]
    assert got[0].path == "/after"


def test_queue_listing_and_dead_letters_refused(
    emulator: Emulator, backend: RecordingBackend
) -> None:
    """GET /queues shows the queue's state and limits; dead-letter calls answer 501 with
    the reason, since Cloud Tasks deletes tasks that run out of attempts."""
    queue = unique_queue_name()
    emulator.create_queue(queue)
    with (
        run_proxy(_settings(backend.url, queue, emulator.host)) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        [info] = client.get(f"{proxy.admin_url}/queues").json()["queues"]
        assert (info["name"], info["state"], info["target"]) == (queue, "running", backend.url)
        refused = client.get(f"{proxy.admin_url}/queues/{queue}/dead-letters", headers=AUTH)
        assert refused.status_code == 501
        assert refused.json()["error"] == "not_supported"
        assert "no dead-letter queue" in refused.json()["detail"]
        missing = client.get(f"{proxy.admin_url}/queues/nope", headers=AUTH)
        assert missing.status_code == 404


def test_state_changes_need_the_token(emulator: Emulator, backend: RecordingBackend) -> None:
    """Without the bearer token a state change is 401; with no token configured at all the
    admin API refuses it with 403. Health and metrics stay open."""
    queue = unique_queue_name()
    emulator.create_queue(queue)
    with (
        run_proxy(_settings(backend.url, queue, emulator.host)) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        assert client.post(f"{proxy.admin_url}/queues/{queue}/pause").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert (
            client.post(f"{proxy.admin_url}/queues/{queue}/pause", headers=wrong).status_code == 401
        )
        assert client.get(f"{proxy.admin_url}/queues/{queue}/tasks").status_code == 401
        assert client.get(f"{proxy.admin_url}/healthz").status_code == 200
        assert client.get(f"{proxy.admin_url}/metrics").status_code == 200
        state = client.get(f"{proxy.admin_url}/queues/{queue}").json()["state"]
        assert state == "running"
    with (
        run_proxy(_settings(backend.url, queue, emulator.host, token=None)) as proxy,
        httpx.Client(timeout=TIMEOUT) as client,
    ):
        refused = client.post(f"{proxy.admin_url}/queues/{queue}/pause", headers=AUTH)
        assert refused.status_code == 403
        assert "INGEST_PROXY_ADMIN_TOKEN" in refused.json()["detail"]
