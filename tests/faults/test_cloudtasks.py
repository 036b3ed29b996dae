"""Cloud Tasks is slow or hangs: 503 with Retry-After, never a false 202, and recovery
without a restart of the proxy.

"Down" (the emulator stopped) is covered by tests/test_e2e_cloudtasks.py
(test_outage_gives_503_then_recovers_without_restart). Here the service is *slow*: the
fake gRPC server of tests/support/fake_cloudtasks.py holds its answers past the enqueue
deadline, and the real emulator is frozen with SIGSTOP (a hung process whose port still
accepts connections), then thawed with SIGCONT.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx

from tests.faults.common import TIMEOUT
from tests.support.backend import RecordingBackend
from tests.support.emulator import cloudtasks_proxy_settings, running_emulator, unique_queue_name
from tests.support.fake_cloudtasks import FakeCloudTasks
from tests.support.servers import run_proxy, wait_for


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"] == "engine_unavailable"
    assert int(response.headers["retry-after"]) >= 1


def test_slow_create_task_is_503_and_a_retry_with_the_same_key_is_one_task(
    fake_cloudtasks: FakeCloudTasks,
) -> None:
    """CreateTask answering after the enqueue deadline gives 503 + Retry-After (not a
    hang, not a 202); a slow answer within the deadline is a 202; the client's retry with
    the same Idempotency-Key is a 202 for the one task the slow call stored."""
    fake = fake_cloudtasks
    settings = cloudtasks_proxy_settings(
        target="https://backend.example", queue="orders", host=fake.host, enqueue_deadline="1s"
    )
    answers: list[tuple[httpx.Response, float]] = []
    with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as client:

        def post(body: bytes, **headers: Any) -> httpx.Response:
            started = time.monotonic()
            response = client.post(proxy.url + "/orders", content=body, headers=headers)
            answers.append((response, time.monotonic() - started))
            return response

        fake.delay_next(1, 0.3)
        assert post(b"slow but in time").status_code == 202
        fake.delay_next(1, 10.0)  # stored at once, answered long after the 1 s deadline
        key = {"Idempotency-Key": "order-7"}
        assert_unavailable(post(b"too slow", **key))
        retry = post(b"too slow", **key)
        assert retry.status_code == 202, retry.text
        assert retry.json()["duplicate"] is True
        assert post(b"fast again").status_code == 202
    refused_after = answers[1][1]
    assert refused_after < 1.0 + 6.0  # bounded by the deadline (generous margin), not 10 s
    accepted = [r.json()["task"] for r, _ in answers if r.status_code == 202]
    stored = {name.rsplit("/", 1)[1] for name in fake.tasks}
    assert set(accepted) <= stored  # every 202 names a task Cloud Tasks holds
    assert len(stored) == 3  # the slow call's task exists once, retry included
    assert len(set(accepted)) == 3


def test_hung_emulator_gives_503_then_recovers_without_restart(
    backend: RecordingBackend,
) -> None:
    """With the real emulator frozen (SIGSTOP) requests get 503 + Retry-After within the
    enqueue deadline and /readyz turns 503; once it is thawed (SIGCONT) the same proxy
    answers 202 again and every 202 is delivered."""
    queue = unique_queue_name("hung")
    with running_emulator() as emulator:
        emulator.create_queue(queue)
        settings = cloudtasks_proxy_settings(
            target=backend.url, queue=queue, host=emulator.host, enqueue_deadline="1s"
        )
        with run_proxy(settings) as proxy, httpx.Client(timeout=TIMEOUT) as client:
            ready = proxy.admin_url + "/readyz"
            post = lambda body: client.post(proxy.url + "/jobs", content=body)  # noqa: E731
            accepted = []
            assert post(b"before").status_code == 202
            accepted.append(b"before")
            assert emulator.pid is not None
            os.killpg(emulator.pid, signal.SIGSTOP)
            try:
                for n in range(3):
                    assert_unavailable(post(b"frozen-%d" % n))
                wait_for(lambda: client.get(ready).status_code == 503, TIMEOUT)
            finally:
                os.killpg(emulator.pid, signal.SIGCONT)
            statuses: list[int] = []

            def accepted_again() -> bool:
                statuses.append(post(b"after").status_code)
                return statuses[-1] == 202

            wait_for(accepted_again, TIMEOUT, interval=0.2, message="no 202 after SIGCONT")
            accepted.append(b"after")
            assert set(statuses) <= {202, 503}, statuses
            wait_for(lambda: client.get(ready).status_code == 200, TIMEOUT)
            wait_for(
                lambda: set(accepted) <= {r.body for r in backend.received},
                TIMEOUT,
                message="an accepted request was not delivered",
            )
    sent = {b"before", b"after"} | {b"frozen-%d" % n for n in range(3)}
    # A call the proxy gave up on may still have been stored once the emulator thawed:
    # that is a 503 the client retries (at least once), never a 202 that is lost.
    assert {r.body for r in backend.received} <= sent
