"""uvicorn's httptools protocol with a deadline and a size cap for request heads, for the
admin listener (the ingress listener has its own protocol, ``ingress_protocol.py``,
which applies the same deadlines and cap and answers with the responses defined here).

uvicorn times out idle keep-alive connections but not a client that trickles its request
line and headers: such a connection would be held forever. Here the headers of every
request must be complete within ``header_timeout`` seconds of the connection opening or of
the request's first byte; otherwise the client gets 408 and the connection is closed.

Nor does uvicorn bound the size of a request head: a client could stream hundreds of
megabytes of one header line into memory before the ingress ever sees it. Here a head
larger than ``max_head_bytes`` gets 431 and the connection is closed, without reading on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from proxy.http.responses import closing_response, refusal_parts

_HEAD_LATE = (408, "request_timeout", "The request headers did not arrive in time.")
_BODY_LATE = (408, "request_timeout", "The request body did not arrive in time.")
_HEAD_TOO_LARGE = (431, "headers_too_large", "The request line and headers are too large.")
HEAD_LATE = closing_response(*_HEAD_LATE)
BODY_LATE = closing_response(*_BODY_LATE)
HEAD_TOO_LARGE = closing_response(*_HEAD_TOO_LARGE)
# The same refusals as (status, headers, body), for the ingress's protocol
# (ingress_protocol.py), which writes them after the answers it owes on the connection.
HEAD_LATE_PARTS = refusal_parts(*_HEAD_LATE)
BODY_LATE_PARTS = refusal_parts(*_BODY_LATE)
HEAD_TOO_LARGE_PARTS = refusal_parts(*_HEAD_TOO_LARGE)


def guarded_protocol(
    header_timeout: float, max_head_bytes: int, body_timeout: float = 30.0
) -> type[HttpToolsProtocol]:
    """An HttpToolsProtocol class whose requests must send their headers within
    ``header_timeout`` seconds and in at most about ``max_head_bytes`` bytes (the check
    runs per read, so a head is refused once the reads that did not complete it pass it),
    and their whole body within ``body_timeout`` seconds of the headers.

    Deadlines are checked by one sweep over the server's connections every quarter of the
    shorter timeout (at most 1 s) rather than by a timer per request: a request then costs
    a few attribute writes, and a late request is refused at most a quarter of the timeout
    late. A late body gets 408 unless a response was already started; either way the
    connection is closed, and the application sees the client disconnect.
    """
    period = min(1.0, header_timeout / 4, body_timeout / 4)
    sweepers: dict[asyncio.AbstractEventLoop, asyncio.TimerHandle] = {}

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(
            self, config: Config, server_state: ServerState, app_state: dict[str, Any], **kw: Any
        ) -> None:
            super().__init__(config, server_state, app_state, **kw)
            self._head_deadline: float | None = None
            self._body_deadline: float | None = None
            self._head_bytes = 0

        def _arm(self) -> None:
            self._head_bytes = 0
            self._head_deadline = self.loop.time() + header_timeout
            if self.loop not in sweepers:
                sweepers[self.loop] = self.loop.call_later(period, self._sweep)

        def _sweep(self) -> None:
            now = self.loop.time()
            for connection in list(self.connections):
                if not isinstance(connection, GuardedHttpToolsProtocol):
                    continue
                deadline = connection._head_deadline
                if deadline is not None and deadline < now:
                    connection._refuse(HEAD_LATE)
                deadline = connection._body_deadline
                if deadline is not None and deadline < now:
                    connection._body_late()
            if self.connections:
                sweepers[self.loop] = self.loop.call_later(period, self._sweep)
            else:
                del sweepers[self.loop]

        def _body_late(self) -> None:
            self._body_deadline = None
            started = getattr(self.cycle, "response_started", True)
            self._refuse(b"" if started else BODY_LATE)

        def _refuse(self, response: bytes) -> None:
            self._head_deadline = None
            if not self.transport.is_closing():
                if response:
                    self.transport.write(response)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self.transport.is_closing():
                return  # refused already: read no further
            in_head = self._head_deadline is not None
            super().data_received(data)
            # Count only reads after which the head is still incomplete, so a body that
            # arrives in the same read as the end of the headers is never counted.
            if in_head and self._head_deadline is not None:
                self._head_bytes += len(data)
                if self._head_bytes > max_head_bytes:
                    self._refuse(HEAD_TOO_LARGE)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_deadline = self._body_deadline = None
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._head_deadline is None:
                self._arm()

        def on_headers_complete(self) -> None:
            self._head_deadline = None
            self._body_deadline = self.loop.time() + body_timeout
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            self._body_deadline = None
            super().on_message_complete()

    return GuardedHttpToolsProtocol
