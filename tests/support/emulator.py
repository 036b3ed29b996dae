"""The real ``gcloud-tasks-emulator`` (PyPI, 0.6.2), in a venv of its own, for tests and bench.

Why a venv of its own: the emulator pins ``protobuf<5`` while google-cloud-tasks 2.26 needs
``protobuf>=6``, so installed next to the project pip silently picks the broken 0.4.0.
The venv lives at ``<repo>/.venv-emulator`` and is made on first use (about 7 s), under a
file lock so parallel runs do not race; ``python -m tests.support.emulator install`` makes
it ahead of time (``.ci/run`` does).

What the emulator does and does not do (measured): it delivers to the task URL as given,
sends ``X-CloudTasks-QueueName`` as the *full* queue path, does not de-duplicate task
names, ignores rate limits, retry config, dispatch deadline and UpdateQueue, retries
failures every 0.1 s (forever unless ``--max-retries``), dispatches one task at a time per
queue, honours PauseQueue and schedule_time, answers GetQueue on a missing queue with
UNKNOWN, and a re-created queue name never dispatches again in the same process (use
:func:`unique_queue_name`). Its dispatcher sends ``Connection: close`` and capitalises
header names (urllib).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.cloud.tasks_v2 import CloudTasksClient, Queue
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from tests.support.servers import free_port

VERSION = "0.6.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
VENV = REPO_ROOT / ".venv-emulator"
PROJECT = "test-project"
LOCATION = "us-central1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
INSTALL_TIMEOUT = 600.0
# Stray tasks (a test's backend already gone) stop after this many retries of 0.1 s
# instead of spinning for the rest of the session.
DEFAULT_MAX_RETRIES = 100

_MARKER = VENV / f".installed-gcloud-tasks-emulator-{VERSION}"
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]
_counter = itertools.count()


def executable() -> Path:
    """The emulator's console script inside its venv."""
    return VENV / "bin" / "gcloud-tasks-emulator"


def ensure_installed() -> Path:
    """Create the emulator venv unless it is complete already; return the executable.

    A marker file written last tells a complete install from one that was interrupted.
    """
    if _MARKER.exists() and executable().exists():
        return executable()
    lock_path = Path(tempfile.gettempdir()) / (
        "ingest-proxy-emulator-" + hashlib.sha256(str(VENV).encode()).hexdigest()[:16] + ".lock"
    )
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _MARKER.exists() and executable().exists():
                return executable()
            env = _clean_env()
            subprocess.run(
                [sys.executable, "-m", "venv", "--clear", str(VENV)],
                check=True,
                timeout=INSTALL_TIMEOUT,
                env=env,
            )
            subprocess.run(
                [
                    str(VENV / "bin" / "python"),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    f"gcloud-tasks-emulator=={VERSION}",
                ],
                check=True,
                timeout=INSTALL_TIMEOUT,
                env=env,
            )
            _MARKER.write_text(VERSION + "\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return executable()


def _clean_env() -> dict[str, str]:
    # The emulator venv must see only its own packages, never the project's.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def cloudtasks_proxy_settings(
    *,
    target: str,
    queue: str,
    host: str,
    enqueue_deadline: str | None = None,
    admin_token: str | None = None,
) -> Settings:
    """A proxy on the Cloud Tasks engine with one queue to ``target``, talking to the
    emulator, fake or cloudtasks-server at ``host`` (project and location of these tests)."""
    cloudtasks: dict[str, object] = {
        "project": PROJECT,
        "location": LOCATION,
        "emulator_host": host,
    }
    if enqueue_deadline is not None:
        cloudtasks["enqueue_deadline"] = enqueue_deadline
    data: dict[str, object] = {
        "engine": "cloudtasks",
        "queues": [{"name": queue, "target": target}],
        "cloudtasks": cloudtasks,
    }
    if admin_token is not None:
        data["server"] = {"admin_token": admin_token}
    return settings_from_dict(data)


def unique_queue_name(prefix: str = "q") -> str:
    """A queue id no earlier test used (the emulator never dispatches a re-created name)."""
    return f"{prefix}-{os.getpid()}-{next(_counter)}-{uuid.uuid4().hex[:8]}"


def queue_path(name: str, project: str = PROJECT, location: str = LOCATION) -> str:
    """``projects/P/locations/L/queues/NAME``."""
    return f"projects/{project}/locations/{location}/queues/{name}"


class Emulator:
    """One emulator process on ``127.0.0.1:port``; ``start()`` again restarts it on the same
    port (with empty state: queues must be created again)."""

    def __init__(self, port: int | None = None, *, max_retries: int = DEFAULT_MAX_RETRIES) -> None:
        self.port = port or free_port()
        self.max_retries = max_retries
        self.project = PROJECT
        self.location = LOCATION
        self._process: subprocess.Popen[bytes] | None = None
        self._client: CloudTasksClient | None = None
        self._channel: grpc.Channel | None = None
        self._log = Path(tempfile.gettempdir()) / f"gcloud-tasks-emulator-{self.port}.log"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the value for ``CLOUD_TASKS_EMULATOR_HOST``."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id while it runs."""
        return self._process.pid if self.running and self._process else None

    @property
    def running(self) -> bool:
        """Whether the process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process and wait (at most 30 s) until its gRPC API answers."""
        if self.running:
            return
        command = [
            str(ensure_installed()),
            "start",
            "--port",
            str(self.port),
            "--max-retries",
            str(self.max_retries),
            "--quiet",
        ]
        env = {**_clean_env(), "PYTHONWARNINGS": "ignore"}
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._reset_client()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not self.running:
                raise RuntimeError(f"the emulator exited during start-up:\n{self.log_tail()}")
            try:
                self.client.list_queues(parent=self.parent, timeout=1.0)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(
                        f"the emulator did not answer on {self.host} within {START_TIMEOUT}s "
                        f"({exc}):\n{self.log_tail()}"
                    ) from exc
                time.sleep(0.05)

    def stop(self) -> None:
        """Terminate the process; kill it if it has not exited within 10 s."""
        process, self._process = self._process, None
        self._reset_client()
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the emulator printed."""
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    @property
    def client(self) -> CloudTasksClient:
        """A synchronous client on an insecure channel to this emulator."""
        if self._client is None:
            self._channel = grpc.insecure_channel(self.host, options=_CHANNEL_OPTIONS)
            transport = CloudTasksGrpcTransport(channel=self._channel)
            self._client = CloudTasksClient(transport=transport)
        return self._client

    def _reset_client(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = None
        self._client = None

    def create_queue(self, name: str) -> str:
        """Create queue ``name`` (a short id); return its full path."""
        path = queue_path(name, self.project, self.location)
        self.client.create_queue(parent=self.parent, queue=Queue(name=path), timeout=10.0)
        return path

    def pause_queue(self, name: str) -> None:
        """Stop dispatching from queue ``name`` (tasks can still be created)."""
        self.client.pause_queue(name=queue_path(name, self.project, self.location), timeout=10.0)

    def resume_queue(self, name: str) -> None:
        """Dispatch from queue ``name`` again."""
        self.client.resume_queue(name=queue_path(name, self.project, self.location), timeout=10.0)

    def task_names(self, name: str) -> list[str]:
        """Names of the tasks queue ``name`` holds now (not yet dispatched or retrying)."""
        tasks = self.client.list_tasks(
            parent=queue_path(name, self.project, self.location), timeout=10.0
        )
        return [task.name for task in tasks]


@contextlib.contextmanager
def running_emulator(*, max_retries: int = DEFAULT_MAX_RETRIES) -> Iterator[Emulator]:
    """An emulator on a free port of 127.0.0.1, stopped on exit."""
    emulator = Emulator(max_retries=max_retries)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="session")
def emulator() -> Iterator[Emulator]:
    """The real emulator for the whole test session, on a free port of 127.0.0.1.

    A test that stops it must start it again before it ends (``try``/``finally``).
    """
    with running_emulator() as running:
        yield running


def main(argv: list[str]) -> int:
    """``python -m tests.support.emulator install``: make the emulator venv."""
    if argv != ["install"]:
        print("usage: python -m tests.support.emulator install", file=sys.stderr)
        return 2
    print(f"gcloud-tasks-emulator {VERSION}: {ensure_installed()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
