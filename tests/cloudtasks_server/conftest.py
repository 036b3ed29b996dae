"""Fixtures of the conformance suite: the google-cloud-tasks client, sync and async,
against our server and against the PyPI emulator.

``api`` is parametrised over (client, server): the sync and async gRPC clients and the sync
client on the REST transport against ``local``, our ``ingest-proxy cloudtasks-server`` (in a
thread, on free ports of 127.0.0.1), and the gRPC clients against ``emulator``, the PyPI
``gcloud-tasks-emulator`` (it has no REST surface). A test decorated with :func:`diverges`
documents where the emulator differs from Cloud Tasks: for the emulator parameter only it is marked
``xfail(strict=True)``, so if the emulator ever starts to conform the suite says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud.tasks_v2 import CloudTasksAsyncClient, CloudTasksClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
    CloudTasksRestTransport,
)

from tests.support.cloudtasks_server import ServerThread, run_server

PROJECT = "test-project"
CALL_TIMEOUT = 15.0  # seconds per RPC
F = TypeVar("F", bound=Callable[..., Any])


def diverges(reason: str) -> Callable[[F], F]:
    """Mark a test the PyPI emulator fails, with the reason (xfail strict, emulator only)."""

    def mark(test: F) -> F:
        test._emulator_divergence = reason  # type: ignore[attr-defined]
        return test

    return mark


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        reason = getattr(getattr(item, "function", None), "_emulator_divergence", None)
        callspec = getattr(item, "callspec", None)
        if (
            reason
            and callspec is not None
            and str(callspec.params.get("api", "")).endswith("-emulator")
            and Path(str(item.fspath)).parent == here
        ):
            item.add_marker(pytest.mark.xfail(strict=True, reason=f"PyPI emulator: {reason}"))


class _Loop:
    """An event loop in a thread, for the async client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = CALL_TIMEOUT * 2) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@contextlib.contextmanager
def _grpc_codes() -> Iterator[None]:
    try:
        yield
    except gexc.GoogleAPICallError as exc:
        response = exc.response
        try:
            status = response.json()["error"]["status"] if response is not None else None
        except (ValueError, KeyError, TypeError):
            status = None
        if status is None:
            raise
        cls = gexc.exception_class_for_grpc_status(grpc.StatusCode[status])
        raise cls(exc.message) from exc


class Api:
    """The client of one kind, called the same way: ``api.create_queue(parent=..., ...)``
    sends a request built from the keyword arguments; ``api.pages(...)`` lists every page.
    Errors are google.api_core exceptions for every kind. Over REST the library maps errors
    by HTTP status only (400 -> BadRequest for INVALID_ARGUMENT and FAILED_PRECONDITION
    alike), so the adapter re-raises the class named by the body's ``error.status``, the
    gRPC code the server sent, to compare the same codes."""

    def __init__(self, host: str, mode: str, loop: _Loop) -> None:
        self.mode = mode
        self._loop = loop
        if mode == "rest":
            self._channel = None
            transport = CloudTasksRestTransport(
                host=host, url_scheme="http", credentials=AnonymousCredentials()
            )
            self.client = CloudTasksClient(transport=transport)
        elif mode == "sync":
            self._channel: Any = grpc.insecure_channel(host)
            self.client: Any = CloudTasksClient(
                transport=CloudTasksGrpcTransport(channel=self._channel)
            )
        else:

            async def make() -> Any:
                channel = grpc.aio.insecure_channel(host)
                transport = CloudTasksGrpcAsyncIOTransport(channel=channel)
                return channel, CloudTasksAsyncClient(transport=transport)

            self._channel, self.client = loop.run(make())

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(**request: Any) -> Any:
            fn = getattr(self.client, method)
            if self.mode == "rest":
                with _grpc_codes():
                    return fn(request=request, timeout=CALL_TIMEOUT)
            if self.mode == "sync":
                return fn(request=request, timeout=CALL_TIMEOUT)
            return self._loop.run(fn(request=request, timeout=CALL_TIMEOUT))

        return call

    def pages(self, method: str, **request: Any) -> list[list[Any]]:
        """Every page of a List call, as lists of resources."""
        field = "queues" if method == "list_queues" else "tasks"
        fn = getattr(self.client, method)
        if self.mode in ("sync", "rest"):
            with _grpc_codes():
                pager = fn(request=request, timeout=CALL_TIMEOUT)
                return [list(getattr(page, field)) for page in pager.pages]

        async def collect() -> list[list[Any]]:
            pager = await fn(request=request, timeout=CALL_TIMEOUT)
            return [list(getattr(page, field)) async for page in pager.pages]

        result: list[list[Any]] = self._loop.run(collect())
        return result

    def close(self) -> None:
        if self.mode == "rest":
            self.client.transport.close()
        elif self.mode == "sync":
            self._channel.close()
        else:
            self._loop.run(self._channel.close())


@pytest.fixture(scope="session")
def local_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Our server for the whole session (tests use queues of their own)."""
    with run_server(tmp_path_factory.mktemp("ctserver") / "tasks.db", rest_port=0) as server:
        yield server


@pytest.fixture(scope="session")
def client_loop() -> Iterator[_Loop]:
    loop = _Loop()
    yield loop
    loop.close()


@pytest.fixture(
    params=["sync-local", "async-local", "rest-local", "sync-emulator", "async-emulator"]
)
def api(request: pytest.FixtureRequest, client_loop: _Loop) -> Iterator[Api]:
    """The google-cloud-tasks client (sync, async or REST) on the chosen server."""
    mode, target = str(request.param).split("-")
    if target == "local":
        server: Any = request.getfixturevalue("local_server")
        host = server.rest_host if mode == "rest" else server.host
    else:
        host = request.getfixturevalue("emulator").host
    client = Api(host, mode, client_loop)
    yield client
    client.close()


@pytest.fixture
def parent() -> str:
    """A location of its own, so listing sees only this test's queues."""
    return f"projects/{PROJECT}/locations/loc-{uuid.uuid4().hex[:12]}"
