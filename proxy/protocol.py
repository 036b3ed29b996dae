"""uvicorn's httptools protocol with a deadline for request headers (slowloris defence).

uvicorn times out idle keep-alive connections but not a client that trickles its request
line and headers: such a connection would be held forever. Here the headers of every
request must be complete within ``header_timeout`` seconds of the connection opening or of
the request's first byte; otherwise the client gets 408 and the connection is closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.problems import error_body

_BODY = error_body("request_timeout", "The request headers did not arrive in time.")
_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)


def guarded_protocol(header_timeout: float) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class whose requests must send their headers within the limit."""

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(
            self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kw: Any
        ) -> None:
            super().__init__(config, server_state, app_state, **kw)
            self._header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_late)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_late(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.write(_RESPONSE)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._header_timer is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

    return GuardedHttpToolsProtocol
