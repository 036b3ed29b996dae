"""The gRPC channels of the Cloud Tasks engine: to the emulator (insecure, no credentials)
or to Google's endpoint (TLS, Application Default Credentials)."""

from __future__ import annotations

from typing import Any

import grpc
from google.cloud.tasks_v2 import CloudTasksAsyncClient
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcAsyncIOTransport

from proxy.config.settings import CloudTasksSettings
from proxy.engines.cloudtasks.errors import credentials_needed

_RECONNECT_OPTIONS: list[tuple[str, Any]] = [
    # The default reconnect backoff grows to 120 s; a proxy must notice recovery quickly.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2000),
]
_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    *_RECONNECT_OPTIONS,
]


def make_client(settings: CloudTasksSettings) -> CloudTasksAsyncClient:
    """A client on an insecure channel to ``emulator_host`` when set (no credentials),
    else on Google's endpoint with Application Default Credentials.

    Must run inside the event loop that will use the client.
    """
    if settings.emulator_host:
        channel = grpc.aio.insecure_channel(settings.emulator_host, options=_CHANNEL_OPTIONS)
        return CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=channel))
    with credentials_needed():
        transport = CloudTasksGrpcAsyncIOTransport(channel=_secure_channel)
    return CloudTasksAsyncClient(transport=transport)


def make_create_task_channel(settings: CloudTasksSettings, host: str) -> grpc.aio.Channel:
    """The channel CreateTask calls use: like the client's, without its interceptors.

    The client library adds a logging interceptor to its channel, which costs every call
    an extra task; on the ingest path that was a fifth of the proxy's CPU per request.
    """
    if settings.emulator_host:
        return grpc.aio.insecure_channel(settings.emulator_host, options=_CHANNEL_OPTIONS)
    with credentials_needed():
        return _secure_channel(host, options=_CHANNEL_OPTIONS[:2])


def _secure_channel(host: str, **kwargs: Any) -> grpc.aio.Channel:
    kwargs["options"] = [*kwargs.get("options", []), *_RECONNECT_OPTIONS]
    channel: grpc.aio.Channel = CloudTasksGrpcAsyncIOTransport.create_channel(host, **kwargs)
    return channel
