"""kill -9 and SIGTERM of a Cloud Tasks engine proxy during a spike.

The embedded engine's crash tests (kill -9 mid-spike with 202 ids compared to deliveries
and duplicates reported; SIGTERM mid-spike, nothing acknowledged lost) are in
tests/engines/local/test_crash.py. The Cloud Tasks engine keeps no state of its own, so
the question there is only whether a 202 ever went out for a task Cloud Tasks does not
hold: a real ``python -m proxy serve --engine cloudtasks`` process talks gRPC to the fake
server of tests/support/fake_cloudtasks.py, which records every task it stores.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter

import httpx

from tests.faults.common import TIMEOUT, proxy_process
from tests.support.emulator import LOCATION, PROJECT
from tests.support.fake_cloudtasks import FakeCloudTasks
from tests.support.servers import wait_for
from tests.support.spike import spike


def serve_args(fake: FakeCloudTasks) -> list[str]:
    return [
        "--engine", "cloudtasks", "--project", PROJECT, "--location", LOCATION,
        "--emulator-host", fake.host, "--queue", "orders",
        "--target", "https://backend.example",
    ]  # fmt: skip


def run_spike(
    fake: FakeCloudTasks, sig: signal.Signals, count: int, after: int
) -> tuple[list[httpx.Response | Exception], int | None]:
    """Spike ``count`` requests; send ``sig`` once ``after`` CreateTask calls arrived."""
    results: list[httpx.Response | Exception] = []
    with proxy_process(*serve_args(fake)) as (process, url, _):
        bodies = [b"spike-%05d" % n for n in range(count)]
        thread = threading.Thread(target=lambda: results.extend(spike(url + "/o", bodies)))
        thread.start()
        wait_for(lambda: fake.create_calls >= after, TIMEOUT, interval=0.005)
        process.send_signal(sig)
        code = process.wait(timeout=TIMEOUT)
        thread.join(timeout=2 * TIMEOUT)
    assert not thread.is_alive()
    return results, code


def accepted_ids(results: list[httpx.Response | Exception]) -> list[str]:
    return [
        r.json()["task"] for r in results if isinstance(r, httpx.Response) and r.status_code == 202
    ]


def stored_ids(fake: FakeCloudTasks) -> set[str]:
    return {name.rsplit("/", 1)[1] for name in fake.tasks}


def test_kill_9_mid_spike_never_acknowledged_an_unstored_task(
    fake_cloudtasks: FakeCloudTasks,
) -> None:
    """kill -9 in the middle of a 1,500-request spike: every task id that got a 202 is
    stored in Cloud Tasks, once."""
    results, code = run_spike(fake_cloudtasks, signal.SIGKILL, 1500, after=500)
    assert code == -signal.SIGKILL
    acked = accepted_ids(results)
    # Calls in flight at the kill (one per connection at most) never got their 202.
    assert 500 - 8 <= len(acked) < 1500, "the kill did not land mid-spike"
    assert set(acked) <= stored_ids(fake_cloudtasks)
    assert len(set(acked)) == len(acked)
    statuses = Counter(getattr(r, "status_code", "no answer") for r in results)
    print(f"\nkill -9: {statuses}, {len(stored_ids(fake_cloudtasks))} tasks stored")


def test_sigterm_mid_spike_answers_in_flight_requests(fake_cloudtasks: FakeCloudTasks) -> None:
    """SIGTERM in the middle of a spike: the process exits 0, every request already being
    handled is answered, and the tasks stored are exactly those that got a 202."""
    fake_cloudtasks.delay_next(100_000, 0.005)  # CreateTask calls are in flight at SIGTERM
    results, code = run_spike(fake_cloudtasks, signal.SIGTERM, 1500, after=300)
    assert code == 0
    statuses = Counter(
        r.status_code if isinstance(r, httpx.Response) else "no connection" for r in results
    )
    assert set(statuses) <= {202, 503, "no connection"}, statuses
    acked = accepted_ids(results)
    assert len(acked) >= 300
    # Both ways: no 202 without a stored task, and no stored task whose request was
    # dropped unanswered (a request being handled at SIGTERM is finished, not cut off).
    assert stored_ids(fake_cloudtasks) == set(acked)
    print(f"\nSIGTERM: {statuses}")
