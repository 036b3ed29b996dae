"""Our local Cloud Tasks server (``proxy.cloudtasks_server``) for tests: in a thread with
its own event loop on a free port of 127.0.0.1 (so sync tests, async tests and a proxy in
another thread reach it alike), or as a real ``ingest-proxy cloudtasks-server`` process.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
from google.cloud.tasks_v2 import CloudTasksClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from proxy.cloudtasks_server.server import LocalCloudTasks
from tests.support.loop_thread import LoopThread
from tests.support.servers import free_port

START_TIMEOUT = 20.0


class ServerThread:
    """A :class:`LocalCloudTasks` on ``db`` served from a thread; ``host`` is
    ``127.0.0.1:PORT``. ``runtime`` arguments go to the server's Runtime."""

    def __init__(self, db: str, **runtime: Any) -> None:
        self.db = db
        self.runtime_args = runtime
        self.host = ""
        self.rest_host = ""  # 127.0.0.1:PORT of the REST surface, when rest_port was given
        self.server: LocalCloudTasks | None = None
        self._runner = LoopThread("the local Cloud Tasks server", START_TIMEOUT)

    def start(self) -> None:
        """Start serving; raise what start-up raised."""

        async def setup() -> None:
            self.server = LocalCloudTasks(self.db, **self.runtime_args)
            await self.server.start()
            self.host = self.server.address
            if self.server.rest is not None:
                self.rest_host = f"127.0.0.1:{self.server.rest.port}"

        self._runner.start(setup)

    def call(self, coro: Any, timeout: float = START_TIMEOUT) -> Any:
        """Run ``coro`` on the server's loop; return its result."""
        return self._runner.call(coro, timeout)

    def stop(self) -> None:
        """Stop serving, close the file, end the thread."""
        server = self.server
        if server is not None:
            self._runner.stop(lambda: server.stop(0.5))
            self.server = None


@contextlib.contextmanager
def run_server(db: str | Path, **runtime: Any) -> Iterator[ServerThread]:
    """A started :class:`ServerThread` on ``db``, stopped on exit."""
    server = ServerThread(str(db), **runtime)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def sync_client(host: str) -> tuple[CloudTasksClient, grpc.Channel]:
    """The synchronous google-cloud-tasks client on an insecure channel to ``host``."""
    channel = grpc.insecure_channel(host)
    return CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel)), channel


class ServerProcess:
    """``ingest-proxy cloudtasks-server`` as a real process (for kill -9)."""

    def __init__(self, db: Path, port: int | None = None) -> None:
        self.db = db
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = db.with_suffix(".log")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait (at most 20 s) until ListQueues answers."""
        command = [sys.executable, "-m", "proxy", "cloudtasks-server", "--port", str(self.port),
                   "--db", str(self.db), "--log-format", "text"]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client, channel = sync_client(self.host)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"the server exited: {self.log.read_text()[-2000:]}")
                try:
                    client.list_queues(parent="projects/p/locations/l", timeout=1.0)
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        finally:
            channel.close()

    def kill(self) -> None:
        """SIGKILL, no chance to clean up."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(START_TIMEOUT)
            self.process = None

    def stop(self) -> None:
        """SIGTERM and wait; SIGKILL after 20 s."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(START_TIMEOUT)
        self.process = None
