"""Helpers for end-to-end tests of the embedded engine: concurrent clients, settings."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings


def local_settings(tmp_path: Path, target: str, **queue: Any) -> Settings:
    """One queue ``q`` to ``target`` on a database in ``tmp_path``."""
    local = queue.pop("local", {})
    server = queue.pop("server", {})
    return settings_from_dict(
        {
            "queues": [{"name": "q", "target": target, **queue}],
            "local": {"db": str(tmp_path / "tasks.db"), **local},
            "server": {"port": 0, "admin_port": 0, **server},
        }
    )


def spike(
    url: str,
    bodies: Sequence[bytes],
    *,
    connections: int = 8,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> list[httpx.Response | Exception]:
    """POST every body to ``url`` over ``connections`` keep-alive connections; a response
    or the transport error for each, in order."""

    async def main() -> list[httpx.Response | Exception]:
        gate = asyncio.Semaphore(connections)
        limits = httpx.Limits(max_connections=connections)
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

            async def one(body: bytes) -> httpx.Response | Exception:
                async with gate:
                    try:
                        return await client.post(url, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        return exc

            return await asyncio.gather(*(one(body) for body in bodies))

    return asyncio.run(main())


def accepted(bodies: Sequence[bytes], results: Sequence[httpx.Response | Exception]) -> set[bytes]:
    """The bodies whose request got a 202."""
    return {
        body
        for body, result in zip(bodies, results, strict=True)
        if isinstance(result, httpx.Response) and result.status_code == 202
    }
