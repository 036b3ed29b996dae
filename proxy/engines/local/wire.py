"""Frames between the engine and its delivery processes, over a Unix socket pair.

A frame is a 4-byte little-endian length and a :mod:`marshal` payload (both ends are the
same interpreter, and marshal is the cheapest encoding of tuples of str, bytes and
numbers). The messages:

- engine -> process, first: ``(CONFIG, concurrencies, log_level, log_format)``, one
  connection pool per queue index;
- engine -> process: ``(SEND, id, queue, method, url, headers, body, deadline, now)`` and
  ``(CANCEL, id)``;
- process -> engine, first: ``(READY,)`` once its pools exist;
- process -> engine: ``(id, status, kind, error, retry_after)``, an
  :class:`~proxy.engines.local.attempt.Outcome` (``status`` and ``retry_after`` may be
  ``None``).
"""

from __future__ import annotations

import asyncio
import marshal
import struct
from collections.abc import Iterator
from typing import Any

CONFIG, SEND, CANCEL, READY = 0, 1, 2, 3
_LENGTH = struct.Struct("<I")
MAX_FRAME = 64 * 1024 * 1024  # bytes; a task is at most a few MiB


def frame(message: tuple[Any, ...]) -> bytes:
    """One message as a frame."""
    payload = marshal.dumps(message)
    return _LENGTH.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into messages; feed it what the socket delivers."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Any, ...]]:
        """The messages completed by ``data``, in order. Raises ``ValueError`` on a frame
        that cannot be a message (the other end is not ours, or is broken)."""
        buffer = self._buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > MAX_FRAME:
                raise ValueError(f"a frame of {size} bytes")
            if end - start - 4 < size:
                break
            # Safe here: the other end is our own process on a private socket pair.
            message = marshal.loads(buffer[start + 4 : start + 4 + size])  # noqa: S302
            start += 4 + size
            if not isinstance(message, tuple):
                raise ValueError("a frame that is not a message")
            yield message
        del buffer[:start]


class FrameWriter:
    """Frames for ``transport``: those queued in one event-loop iteration leave in one
    write (one system call). Frames queued while ``transport`` is ``None`` or closing are
    dropped at the flush."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.WriteTransport | None = None
        self._out: list[bytes] = []

    def put(self, message: tuple[Any, ...]) -> None:
        """Queue ``message``; it is written at the end of this loop iteration."""
        if not self._out:
            self.loop.call_soon(self.flush)
        self._out.append(frame(message))

    def flush(self) -> None:
        """Write what is queued now."""
        out, self._out = self._out, []
        transport = self.transport
        if out and transport is not None and not transport.is_closing():
            transport.write(b"".join(out))

    def clear(self) -> None:
        """Forget what is queued (its reader is gone)."""
        self._out.clear()
