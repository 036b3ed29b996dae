"""The HTTP client deliveries go out on: one aiohttp session and connection pool per queue.

Chosen by measurement (bench/delivery_clients.py, bench/README.md): aiohttp costs a
fraction of httpx's CPU per request. Settings every delivery relies on:

- a pool of at most ``connections`` connections (the queue's ``concurrency``: the
  dispatcher never has more attempts in flight, so an attempt never waits for one), kept
  alive for :data:`KEEPALIVE_SECONDS` when idle;
- no cookie jar, no proxy or ``.netrc`` from the environment (``trust_env=False``);
- no headers of its own beyond ``Host`` and ``Content-Length``: not ``Content-Type``
  (a body without one is delivered without one, as Cloud Tasks does), not
  ``Accept-Encoding`` (the backend compresses only when the client asked, since the
  response is never decoded: only a snippet of it is kept);
- timeouts, redirects (never followed) and the bounded read are per attempt
  (:func:`proxy.engines.local.attempt.send`).
"""

from __future__ import annotations

import ssl

import aiohttp

# Below the idle timeout of common servers (uvicorn and Node: 5 s), so the pool rarely
# reuses a connection the backend is closing at that moment.
KEEPALIVE_SECONDS = 4.0
_NOT_ADDED = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


def delivery_session(connections: int, tls: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
    """A session for one queue's deliveries, with at most ``connections`` connections
    (at least one). ``tls`` is the context for https targets (the system's CA bundle when
    omitted; pass one context to share it between sessions). Call from the event loop
    that will use it; close it with ``await session.close()``."""
    connector = aiohttp.TCPConnector(
        limit=max(1, connections),
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_SECONDS,
        ssl=tls if tls is not None else True,
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        skip_auto_headers=_NOT_ADDED,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),  # each attempt sets its deadline
    )


def tls_context() -> ssl.SSLContext:
    """The default client TLS context (system CA bundle, hostname checks), made once per
    engine: each context holds the CA bundle in memory."""
    return ssl.create_default_context()
