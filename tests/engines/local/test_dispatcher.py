"""Per-queue scheduling with a manual clock: no sleeps (proxy/engines/local/dispatcher.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.config.settings import QueueSettings, RetrySettings
from proxy.engines.http_client import ConnectionPool
from proxy.engines.local import dispatcher as dispatcher_module
from proxy.engines.local.attempt import PoolSender
from proxy.engines.local.clock import ManualClock
from proxy.engines.local.dispatcher import LEASE_PERIOD, Dispatcher
from proxy.engines.local.store.store import Store
from proxy.envelope import Envelope
from proxy.metrics import Metrics
from tests.support.log_capture import CapturedLines
from tests.support.loop_backend import LoopBackend, Reply, Seen, loop_backend

pytestmark = pytest.mark.anyio

Answer = Callable[[Seen], "Reply | Awaitable[Reply]"]


@dataclass
class Rig:
    """A dispatcher on a real store, a manual clock and a real backend on the test's loop."""

    clock: ManualClock
    store: Store
    backend: LoopBackend
    pool: ConnectionPool
    answer: Answer = lambda request: Reply(200)
    seen: list[tuple[float, Seen]] = field(default_factory=list)
    dispatcher: Dispatcher | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def handler(self, request: Seen) -> Reply | Awaitable[Reply]:
        self.seen.append((self.clock.time(), request))
        return self.answer(request)

    def make(self, **queue: object) -> Dispatcher:
        target = f"{self.backend.url}/base"
        settings = QueueSettings(name="q", target=target, **queue)  # type: ignore[arg-type]
        self.dispatcher = Dispatcher(
            settings,
            store=self.store,
            sender=PoolSender(self.pool),
            clock=self.clock,
            metrics=self.metrics,
        )
        return self.dispatcher

    async def add(self, count: int, **kw: object) -> None:
        for n in range(count):
            env = Envelope(
                id=f"t{n}", queue="q", method="POST", path=f"/p{n}", query="",
                headers=(("content-type", "text/plain"),), body=f"b{n}".encode(),
                received_at=self.clock.time(), request_id=f"r{n}", **kw,  # type: ignore[arg-type]
            )  # fmt: skip
            await self.store.enqueue(env)

    async def step(self) -> float:
        """One scheduling round, then let every attempt it started finish and its outcome
        be recorded."""
        assert self.dispatcher is not None
        delay = await self.dispatcher.step()
        await asyncio.gather(*self.dispatcher.in_flight.values())
        await self.dispatcher.completions()
        return delay


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    clock = ManualClock(start=10_000.0)
    store = Store(str(tmp_path / "d.db"), clock=clock.time)
    store.open(["q"])
    async with loop_backend() as backend:
        pool = ConnectionPool(8)
        rig = Rig(clock=clock, store=store, backend=backend, pool=pool)
        backend.handler = rig.handler
        yield rig
        await pool.close()
    store.close()


async def test_burst_then_rate(rig: Rig) -> None:
    """At 2/s with burst 3, ten due tasks go out 3 at once, then one per 0.5 s."""
    rig.make(rate=2, burst=3)
    await rig.add(10)
    await rig.step()
    assert len(rig.seen) == 3
    assert await rig.step() == pytest.approx(0.5)  # the bucket is empty
    rig.clock.advance(0.49)
    await rig.step()
    assert len(rig.seen) == 3
    rig.clock.advance(0.01)
    await rig.step()
    assert len(rig.seen) == 4
    for _ in range(6):
        rig.clock.advance(0.5)
        await rig.step()
    assert len(rig.seen) == 10
    assert rig.store.counts()["q"].tasks == 0  # every 200 completed its task


async def test_concurrency_cap(rig: Rig) -> None:
    """No more attempts start while ``concurrency`` are in flight."""
    gate, two_arrived = asyncio.Event(), asyncio.Event()
    started = 0

    async def slow(request: Seen) -> Reply:
        nonlocal started
        started += 1
        if started == 2:
            two_arrived.set()
        await gate.wait()
        return Reply(200)

    rig.answer = slow
    dispatcher = rig.make(rate=100, burst=10, concurrency=2)
    await rig.add(5)
    await dispatcher.step()
    await dispatcher.step()
    async with asyncio.timeout(10):  # the backend answers on this loop
        await two_arrived.wait()
    assert len(dispatcher.in_flight) == 2
    gate.set()
    await asyncio.gather(*dispatcher.in_flight.values())
    assert started == 2
    await rig.step()
    assert started == 4


async def test_request_matches_cloud_tasks(rig: Rig) -> None:
    """The backend gets method, path under the target, body, and X-CloudTasks-* headers."""
    rig.make()
    await rig.add(1)
    await rig.step()
    _, request = rig.seen[0]
    assert request.method == "POST"
    assert request.url == f"{rig.backend.url}/base/p0"
    assert request.content == b"b0"
    h = request.headers
    assert h["user-agent"] == "Google-Cloud-Tasks"
    assert h["x-cloudtasks-queuename"] == "q"
    assert h["x-cloudtasks-taskname"] == "t0"
    assert h["x-cloudtasks-taskretrycount"] == "0"
    assert h["x-cloudtasks-taskexecutioncount"] == "0"
    assert float(h["x-cloudtasks-tasketa"]) == pytest.approx(10_000.0)
    assert "x-cloudtasks-taskpreviousresponse" not in h
    assert h["content-type"] == "text/plain"


async def test_retries_follow_the_backoff_schedule(rig: Rig) -> None:
    """500s are retried after 1, 2, 4, 4 s (min 1, max 4); headers count the attempts."""
    statuses = iter([500, 500, 404, 500, 200])
    rig.answer = lambda request: Reply(next(statuses))
    rig.make(rate=100, retry=RetrySettings(min_backoff=1, max_backoff=4, max_doublings=5))
    await rig.add(1)
    await rig.step()
    for done, delay in enumerate((1, 2, 4, 4), start=1):
        rig.clock.advance(delay - 0.01)
        await rig.step()
        assert len(rig.seen) == done  # not yet
        rig.clock.advance(0.01)
        await rig.step()
    times = [t - 10_000 for t, _ in rig.seen]
    assert times == pytest.approx([0, 1, 3, 7, 11])
    headers = [r.headers for _, r in rig.seen]
    assert [h["x-cloudtasks-taskretrycount"] for h in headers] == ["0", "1", "2", "3", "4"]
    # 5xx answers are not executions; the 404 is.
    assert [h["x-cloudtasks-taskexecutioncount"] for h in headers] == ["0", "0", "0", "1", "1"]
    assert [h.get("x-cloudtasks-taskpreviousresponse") for h in headers] == [
        None, "500", "500", "404", "500"
    ]  # fmt: skip
    assert headers[1]["x-cloudtasks-taskretryreason"] == ""
    assert rig.store.counts()["q"].tasks == 0


async def test_retry_after_is_honoured_and_slows_the_queue(rig: Rig) -> None:
    """429 with Retry-After: 3 means no attempt before 3 s, and the queue rate halves."""
    statuses = iter([429, 200])
    rig.answer = lambda request: Reply(next(statuses), headers={"retry-after": "3"})
    dispatcher = rig.make(rate=10, retry=RetrySettings(min_backoff=0.1))
    await rig.add(1)
    await rig.step()
    assert dispatcher.rate() == 5
    assert (
        rig.metrics.registry.get_sample_value("ingest_proxy_dispatch_rate", {"queue": "q"}) is None
    )
    rig.clock.advance(2.99)
    await rig.step()
    assert len(rig.seen) == 1
    rig.clock.advance(0.01)
    await rig.step()
    assert len(rig.seen) == 2
    rig.clock.advance(60)
    assert dispatcher.rate() == 10


async def test_connection_error_has_no_previous_response(rig: Rig) -> None:
    """After an attempt without a response, the retry carries no previous-response header."""
    calls = 0

    def flaky(request: Seen) -> Reply:
        nonlocal calls
        calls += 1
        return Reply(drop=calls == 1)  # the first attempt: the connection drops, no answer

    rig.answer = flaky
    rig.make(retry=RetrySettings(min_backoff=1))
    await rig.add(1)
    await rig.step()
    rig.clock.advance(1)
    await rig.step()
    retry = rig.seen[1][1].headers
    assert retry["x-cloudtasks-taskretrycount"] == "1"
    assert "x-cloudtasks-taskpreviousresponse" not in retry
    assert (
        rig.metrics.registry.get_sample_value(
            "ingest_proxy_dispatches_total", {"queue": "q", "status_class": "error"}
        )
        == 1
    )


async def test_exhausted_attempts_go_to_dead_letters(rig: Rig) -> None:
    """After max_attempts failures the task is in the dead-letter table with its last answer."""
    rig.answer = lambda request: Reply(503, body=b"backend down")
    rig.make(retry=RetrySettings(max_attempts=2, min_backoff=1))
    await rig.add(1)
    await rig.step()
    rig.clock.advance(1)
    await rig.step()
    rig.clock.advance(3600)
    await rig.step()
    assert len(rig.seen) == 2
    (dead,) = rig.store.dead_letters("q")
    assert (dead.attempts, dead.last_status, dead.last_error) == (2, 503, "backend down")
    assert rig.store.counts()["q"].tasks == 0


async def test_redirect_is_not_followed(rig: Rig) -> None:
    """A 3xx is a failed attempt: the redirect target is never requested."""
    rig.answer = lambda request: Reply(302, headers={"location": "/elsewhere"})
    rig.make(retry=RetrySettings(max_attempts=1))
    await rig.add(1)
    await rig.step()
    assert [r.path_qs for _, r in rig.seen] == ["/base/p0"]
    assert rig.store.dead_letters("q")[0].last_status == 302


async def test_future_tasks_wait_for_their_eta(rig: Rig) -> None:
    """A task scheduled 5 s ahead is not sent before; the step says when to look again."""
    rig.make()
    await rig.add(1, schedule_time=10_005.0)
    assert await rig.step() == pytest.approx(1.0)  # capped idle wait
    rig.clock.advance(4.5)
    assert await rig.step() == pytest.approx(0.5)
    rig.clock.advance(0.5)
    await rig.step()
    assert len(rig.seen) == 1


async def test_a_refused_completion_is_retried_and_not_delivered_twice(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the store cannot record a success, the task stays held (no second delivery
    while the process runs) and the completion is tried again until it is written."""
    monkeypatch.setattr(dispatcher_module, "COMPLETE_RETRY", 0.05)
    dispatcher = rig.make()
    await rig.add(1)
    refuse = (
        "CREATE TEMP TRIGGER refuse BEFORE DELETE ON tasks BEGIN SELECT RAISE(ABORT, 'no'); END"
    )
    await rig.store.writer.submit(lambda conn: conn.execute(refuse) and None)
    await rig.step()  # delivered; its completion fails (the store refuses deletes)
    assert len(rig.seen) == 1
    await rig.step()
    assert len(rig.seen) == 1  # held, not taken again
    assert rig.store.counts()["q"].tasks == 1
    await rig.store.writer.submit(lambda conn: conn.execute("DROP TRIGGER refuse") and None)
    for _ in range(200):  # the retry comes after 0.05 s of real time
        if rig.store.counts()["q"].tasks == 0:
            break
        await asyncio.sleep(0.05)
    assert rig.store.counts()["q"].tasks == 0
    await rig.step()
    assert len(rig.seen) == 1
    assert dispatcher.in_flight == {}


async def test_drain_cancels_slow_attempts_and_reports_them(rig: Rig) -> None:
    """Attempts still running after the grace period are cancelled and listed; their
    tasks are due again at once (a lease lives in the dispatcher's memory)."""

    async def hang(request: Seen) -> Reply:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    rig.answer = hang
    dispatcher = rig.make()
    await rig.add(2)
    await dispatcher.step()
    dispatcher.stop()
    abandoned = await dispatcher.drain(grace=0.05)
    assert len(abandoned) == 2
    again = await rig.store.lease("q", rig.clock.time(), 10)
    assert sorted(task.seq for task in again.tasks) == sorted(abandoned)


async def test_one_log_line_per_attempt(rig: Rig, log_lines: CapturedLines) -> None:
    """Each attempt logs queue, task, request id, status and what happens next; no body."""
    statuses = iter([503, 200])
    rig.answer = lambda request: Reply(next(statuses), body=b"secret body")
    rig.make(retry=RetrySettings(min_backoff=1))
    await rig.add(1)
    await rig.step()
    rig.clock.advance(1)
    await rig.step()
    fields = log_lines.entries("ingest_proxy.delivery")
    assert [(f["level"], f["msg"], f["queue"]) for f in fields] == [("info", "delivery", "q")] * 2
    assert [(f["attempt"], f["status"], f["result"]) for f in fields] == [
        (1, 503, "retry"),
        (2, 200, "done"),
    ]
    assert fields[0]["task"] == "t0"
    assert fields[0]["request_id"] == "r0"
    assert fields[0]["retry_in"] == 1
    assert all("secret" not in line for line in log_lines.lines)  # the answer body is not logged


async def test_a_queue_at_its_rate_leases_in_groups_and_keeps_the_rate(rig: Rig) -> None:
    """At 500/s with the bucket empty, the dispatcher waits for LEASE_PERIOD's worth of
    tokens (25 in 50 ms) and starts them together instead of one every 2 ms; over a second
    the rate is exact."""
    assert LEASE_PERIOD == 0.05  # the numbers below
    rig.make(rate=500, burst=100, concurrency=1000)
    await rig.add(700)
    await rig.step()
    assert len(rig.seen) == 100  # the burst
    assert await rig.step() == pytest.approx(0.05)  # 25 tokens away, not 1
    rig.clock.advance(0.03)
    assert await rig.step() == pytest.approx(0.02)
    assert len(rig.seen) == 100  # 15 tokens are not enough
    rig.clock.advance(0.02)
    await rig.step()
    assert len(rig.seen) == 125
    for _ in range(19):
        rig.clock.advance(0.05)
        await rig.step()
    assert len(rig.seen) == 100 + 500  # one second: the burst plus 500
