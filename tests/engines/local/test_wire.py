"""Frames between the engine and its delivery processes (proxy/engines/local/wire.py)."""

from __future__ import annotations

import marshal
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.engines.local import wire

MESSAGES = [
    (wire.SEND, 1, 0, "POST", "http://b/x?y=1", {"a": "b"}, b"\x00" * 3000, 600.0, 1.5),
    (wire.CANCEL, 1),
    (7, 503, "5xx", "busy", None),
    (wire.CONFIG, [4, 1000], "info", "json"),
]


@given(st.lists(st.integers(min_value=0, max_value=1), min_size=0, max_size=60))
def test_frames_split_anywhere_come_out_whole_and_in_order(cuts: list[int]) -> None:
    """However the socket cuts the stream, each message comes out once, whole, in order."""
    stream = b"".join(wire.frame(m) for m in MESSAGES)
    points = sorted({round(len(stream) * (i + c) / (len(cuts) + 1)) for i, c in enumerate(cuts)})
    reader = wire.FrameReader()
    out = []
    last = 0
    for point in [*points, len(stream)]:
        out.extend(reader.feed(stream[last:point]))
        last = point
    assert out == MESSAGES


def test_a_frame_too_large_or_not_a_message_is_refused() -> None:
    """A length beyond the bound, or a payload that is not a tuple, raises ValueError."""
    with pytest.raises(ValueError, match="bytes"):
        list(wire.FrameReader().feed(struct.pack("<I", wire.MAX_FRAME + 1)))
    payload = marshal.dumps([1, 2])
    with pytest.raises(ValueError, match="not a message"):
        list(wire.FrameReader().feed(struct.pack("<I", len(payload)) + payload))
