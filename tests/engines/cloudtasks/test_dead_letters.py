"""Dead letters on Cloud Tasks (proxy/engines/cloudtasks/dead_letters.py): the replay
names, what a dead-letter task holds and shows, and `queues apply` making the paused
companion queue (on our cloudtasks-server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.cloud.tasks_v2 import Queue

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.cloudtasks.dead_letters import (
    META,
    LastAttempt,
    dead_letter_info,
    dead_letter_task,
    replay_id,
    replay_task,
)
from proxy.engines.cloudtasks.queues import apply_queues
from proxy.engines.cloudtasks.request import queue_targets
from tests.support.cloudtasks_server import run_server, sync_client


def _settings(host: str = "127.0.0.1:1") -> Settings:
    return settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": [
                {"name": "orders", "target": "https://backend.example/api"},
                {"name": "plain", "target": "https://backend.example", "relay": False},
            ],
            "cloudtasks": {
                "project": "p",
                "location": "l",
                "emulator_host": host,
                "relay": True,
                "relay_url": "https://proxy.example/_relay",
                "relay_service_account_email": "invoker@p.iam.gserviceaccount.com",
            },
        }
    )


@pytest.mark.parametrize(
    ("task_id", "replayed"),
    [("abc", "abc-r1"), ("abc-r1", "abc-r2"), ("abc-r9", "abc-r10"), ("a-rb", "a-rb-r1")],
)
def test_replay_ids(task_id: str, replayed: str) -> None:
    assert replay_id(task_id) == replayed


def test_a_dead_letter_keeps_the_request_and_its_last_attempt() -> None:
    target = queue_targets(_settings())["orders"]
    assert target.relay_base == "https://proxy.example/_relay/orders"
    last = LastAttempt("t1", 503, "", b"down\x00\xff", 3, 2000.0, 1000.0)
    task = dead_letter_task(
        target, last, method="PUT", url=f"{target.relay_base}/x/y?z=1",
        headers={"content-type": "text/plain"}, body=b"data",
    )  # fmt: skip
    assert task.name == "projects/p/locations/l/queues/orders-dead-letters/tasks/t1"
    assert task.http_request.headers["content-type"] == "text/plain"
    info = dead_letter_info(target, task)
    assert (info.id, info.queue, info.method, info.path, info.query) == (
        "t1", "orders", "PUT", "/x/y", "z=1",
    )  # fmt: skip
    assert (info.last_status, info.attempts, info.failed_at, info.created_at) == (
        503, 3, 2000.0, 1000.0,
    )  # fmt: skip
    assert info.response_snippet == "down\x00\ufffd"
    assert info.body_bytes == 4
    replay = replay_task(target, task)
    assert replay.name == "projects/p/locations/l/queues/orders/tasks/t1-r1"
    assert not any(name.startswith(META) for name in replay.http_request.headers)
    assert replay.http_request.url == task.http_request.url
    assert replay.http_request.body == b"data"
    assert replay.http_request.oidc_token.audience == "https://proxy.example/_relay"
    assert replay.http_request.oidc_token.service_account_email == target.service_account_email


def test_apply_makes_the_companion_queue_paused_and_keeps_it_paused(tmp_path: Path) -> None:
    with run_server(tmp_path / "ct.db") as server:
        settings = _settings(server.host)
        first = asyncio.run(apply_queues(settings, dry_run=False))
        described = [change.describe() for change in first]
        assert "+ create queue orders-dead-letters: state=paused" in described
        assert not any("plain-dead-letters" in line for line in described)
        client, channel = sync_client(server.host)
        path = "projects/p/locations/l/queues/orders-dead-letters"
        assert client.get_queue(name=path).state == Queue.State.PAUSED
        client.resume_queue(name=path)
        again = asyncio.run(apply_queues(settings, dry_run=False))
        assert "~ update queue orders-dead-letters: state running -> paused" in [
            change.describe() for change in again
        ]
        assert client.get_queue(name=path).state == Queue.State.PAUSED
        channel.close()
