"""Where the relay listens: its own port (GKE: a port and Service of its own), served by
:class:`RelayApp` under uvicorn with the admin listener's guarded protocol; or a reserved
path on the ingress port (Cloud Run exposes one port per service), where
:class:`RelayingIngress` hands the requests under ``cloudtasks.relay_url``'s path to the
relay and every other request to the ingress as before."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, cast

from proxy.config.settings import Settings
from proxy.engines import Engine
from proxy.errors import EngineUnavailableError, ProxyError
from proxy.http.responses import Answer, error_response_parts
from proxy.ingress.asgi import _read_body  # the ingress's own bounded body reader
from proxy.ingress.head import Scope
from proxy.ingress.pipeline import Ingress, Pending, Respond
from proxy.ingress.routing import Route
from proxy.metrics import Metrics
from proxy.relay.relay import Relay

Message = MutableMapping[str, Any]
_STOPPED = EngineUnavailableError("The relay stopped during this delivery.", retry_after=1)


class RelayPending(Pending):
    """A request for the relay whose head was read (only ``scope`` and ``method`` mean
    anything: the relay checks the rest itself)."""

    __slots__ = ()


class RelayingIngress(Ingress):
    """The ingress, with the relay's reserved path taken out of it."""

    def __init__(self, settings: Settings, engine: Engine, metrics: Metrics, relay: Relay) -> None:
        super().__init__(settings, engine, metrics)
        self.relay = relay

    def start(self, scope: Scope) -> Pending | Answer:
        """The relay's path goes to the relay; everything else to the ingress."""
        raw = scope.get("raw_path") or str(scope["path"]).encode()
        if not self.relay.serves(bytes(raw)):
            return super().start(scope)
        route = cast(Route, None)  # the relay routes by itself
        now = time.time()
        return RelayPending(
            scope, route, scope["method"], "", "", None, None, "", "", (), now, now, {}
        )

    def refuse(self, pending: Pending, exc: ProxyError) -> Answer:
        """A refusal of a relay request is not the ingress's to count or log."""
        if isinstance(pending, RelayPending):
            return error_response_parts(exc)
        return super().refuse(pending, exc)

    def finish(self, pending: Pending, body: bytes, respond: Respond) -> None:
        """Relay ``pending`` (answering once the backend did), or enqueue it."""
        if not isinstance(pending, RelayPending):
            super().finish(pending, body, respond)
            return
        task = asyncio.get_running_loop().create_task(self.relay.handle(pending.scope, body))

        def done(task: asyncio.Task[Answer]) -> None:
            respond(*(error_response_parts(_STOPPED) if task.cancelled() else task.result()))

        task.add_done_callback(done)


class RelayApp:
    """The relay as an ASGI app, for its own listener: every HTTP request is a delivery."""

    def __init__(self, relay: Relay, max_body: int) -> None:
        self.relay = relay
        self.max_body = max_body

    async def __call__(
        self,
        scope: Message,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            return
        try:
            body = await _read_body(receive, self.max_body)
        except ProxyError as exc:
            status, headers, payload = error_response_parts(exc)
            headers = [*headers, (b"connection", b"close")]
        else:
            status, headers, payload = await self.relay.handle(scope, body)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
