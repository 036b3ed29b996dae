"""How the task store writes a task's headers in its ``headers`` column.

Names and values alternate, one per line: ``content-type\\napplication/json\\nx-a\\n1``. The
ingress only lets through header names that are HTTP tokens and values without CR or LF,
so a line break cannot be part of either; encoding is one ``str.join``, about a fifth of
the cost of ``json.dumps``, on the hot path of every enqueue. Headers that do contain a
line break, or whose first name starts with ``[`` (possible only for tasks created through
the Cloud Tasks API server), are written as a JSON list of pairs instead, which is also
what earlier versions wrote: :func:`decode_headers` reads both.
"""

from __future__ import annotations

import json
from itertools import chain

Headers = tuple[tuple[str, str], ...]


def encode_headers(headers: Headers) -> str:
    """The column text for ``headers`` (lower-case ``(name, value)`` pairs)."""
    text = "\n".join(chain.from_iterable(headers))
    if text.count("\n") != 2 * len(headers) - 1 or text.startswith("["):
        return json.dumps(headers) if headers else ""
    return text


def decode_headers(text: str) -> Headers:
    """The headers written by :func:`encode_headers` (or as JSON by earlier versions)."""
    if not text:
        return ()
    if text.startswith("["):
        return tuple((name, value) for name, value in json.loads(text))
    parts = text.split("\n")
    return tuple(zip(parts[::2], parts[1::2], strict=True))
