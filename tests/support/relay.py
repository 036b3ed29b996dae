"""A Cloud Tasks-engine proxy in relay mode against our local Cloud Tasks server
(``cloudtasks-server``, which signs each task's OIDC token with its own key): the
server's REST address is the tokens' issuer and its ``/oauth2/v1/certs`` their keys, so
the relay verifies them with google-auth as it verifies Google's in production."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from uvicorn.config import LOGGING_CONFIG

from proxy.app import create_admin_app, create_app
from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.cloudtasks.queues import apply_queues
from proxy.relay.listener import RelayApp
from proxy.server import admin_options, ingress_options
from tests.support.cloudtasks_server import ServerThread
from tests.support.servers import free_port, serve_together

PROJECT, LOCATION = "relay-project", "local"
INVOKER = "tasks-invoker@relay-project.iam.gserviceaccount.com"
ADMIN_TOKEN = "relay-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
RELAY_PATH = "/_ingest-proxy/relay"


@dataclass
class RelayProxy:
    """A running proxy: ingress, admin and relay base URLs, and its settings."""

    url: str
    admin_url: str
    relay_url: str
    settings: Settings


def relay_settings(
    server: ServerThread,
    queues: list[dict[str, Any]],
    *,
    port: int,
    relay_port: int | None = None,
    routes: list[dict[str, Any]] | None = None,
    **cloudtasks: Any,
) -> Settings:
    """Settings of a relay-mode proxy on ``port`` (the relay on ``relay_port``, or on the
    ingress port's reserved path) against ``server``; ``cloudtasks`` adds keys there."""
    base = f"http://127.0.0.1:{relay_port or port}"
    relay_url = base if relay_port else base + RELAY_PATH
    return settings_from_dict(
        {
            "engine": "cloudtasks",
            "queues": queues,
            "routes": routes or [],
            "server": {"port": port, "admin_port": free_port(), "admin_token": ADMIN_TOKEN},
            "cloudtasks": {
                "project": PROJECT,
                "location": LOCATION,
                "emulator_host": server.host,
                "relay": True,
                "relay_url": relay_url,
                **({"relay_port": relay_port} if relay_port else {}),
                "relay_service_account_email": INVOKER,
                "relay_issuer": f"http://{server.rest_host}",
                "relay_certs_url": f"http://{server.rest_host}/oauth2/v1/certs",
                **cloudtasks,
            },
        }
    )


@contextlib.contextmanager
def run_relay_proxy(settings: Settings) -> Iterator[RelayProxy]:
    """``queues apply`` for ``settings``, then the proxy's listeners (the relay's own
    one too when it has a port) on one loop, as ``ingest-proxy serve`` runs them."""
    asyncio.run(apply_queues(settings, dry_run=False))
    app = create_app(settings)
    quiet = {"log_config": LOGGING_CONFIG, "log_level": "warning"}
    server = settings.server
    apps = [
        (app, ingress_options(settings) | quiet),
        (create_admin_app(app), admin_options(settings) | quiet),
    ]
    ports: list[int | None] = [server.port, server.admin_port]
    relay_port = settings.cloudtasks.relay_port
    if relay_port is not None:
        relay_app = RelayApp(app.state.relay, settings.limits.max_body_bytes)
        apps.append((relay_app, admin_options(settings) | quiet))
        ports.append(relay_port)
    with serve_together(apps, ports=ports) as urls:
        yield RelayProxy(
            url=urls[0],
            admin_url=urls[1],
            relay_url=settings.cloudtasks.relay_url or "",
            settings=settings,
        )
