"""Admin listener: health, readiness, metrics, and the queue/task/dead-letter API.

It has a port of its own so the proxy never shadows a backend path. Health, readiness,
metrics, the OpenAPI document and the queue overview are open (probes and Prometheus need
them); every call that shows tasks or changes state needs ``Authorization: Bearer
<server.admin_token>``, and is refused with 403 while no token is configured.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.admin.openapi import admin_openapi
from proxy.auth import bearer_token, token_matches
from proxy.engines.admin import DeadLetterInfo, QueueAdmin, TaskInfo
from proxy.engines.spool_admin import SpoolListing
from proxy.errors import (
    BadRequestError,
    EngineUnavailableError,
    ForbiddenError,
    MethodNotAllowedError,
    NotFoundError,
    NotSupportedError,
    ProxyError,
    UnauthorizedError,
)
from proxy.http.responses import error_response_parts
from proxy.state import ProxyState

Handler = Callable[[Request], Awaitable[Response]]
MAX_PAGE = 1000


def _task_json(task: TaskInfo) -> dict[str, Any]:
    data = dataclasses.asdict(task)
    body = data.pop("body")
    data["body_base64"] = base64.b64encode(body).decode() if body is not None else None
    if task.headers is not None:
        data["headers"] = [list(pair) for pair in task.headers]
    return data


def _dead_letter_json(letter: DeadLetterInfo) -> dict[str, Any]:
    return dataclasses.asdict(letter)


def build_admin_app(runtime: ProxyState) -> Starlette:
    """The admin Starlette app for ``runtime`` (see the module docstring for auth)."""
    settings = runtime.settings
    queue_names = {queue.name for queue in settings.queues}
    token = settings.server.admin_token

    def admin_ops() -> QueueAdmin:
        engine = runtime.engine
        if not isinstance(engine, QueueAdmin):
            raise NotSupportedError(f"The {engine.name} engine offers no queue administration.")
        if not runtime.started:
            raise EngineUnavailableError("The engine has not started yet.", retry_after=1)
        return engine

    def queue_of(request: Request) -> str:
        name = str(request.path_params["queue"])
        if name not in queue_names:
            raise NotFoundError(f"No queue is named {name!r}.")
        return name

    def guarded(handler: Handler) -> Handler:
        async def check(request: Request) -> Response:
            if token is None:
                raise ForbiddenError(
                    "The admin API is switched off: set INGEST_PROXY_ADMIN_TOKEN (or "
                    "server.admin_token) to enable it."
                )
            presented = bearer_token(request.headers.get("authorization"))
            if not token_matches(presented, token):
                raise UnauthorizedError("A valid admin bearer token is required.")
            return await handler(request)

        return check

    def page_args(request: Request) -> tuple[int, str | None]:
        raw = request.query_params.get("limit", "100")
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
            raise BadRequestError(f"limit must be a whole number from 1 to {MAX_PAGE}.")
        cursor = request.query_params.get("cursor") or None
        if cursor is not None and len(cursor) > 200:
            raise BadRequestError("cursor is not one this API handed out.")
        return int(raw), cursor

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if runtime.draining:
            raise EngineUnavailableError("The proxy is shutting down.", retry_after=1)
        if not runtime.started:
            raise EngineUnavailableError("The engine has not started yet.", retry_after=1)
        await runtime.engine.check_ready()
        return JSONResponse({"status": "ready", "engine": runtime.engine.name})

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        return JSONResponse(admin_openapi())

    async def list_queues(request: Request) -> Response:
        queues = await admin_ops().list_queues()
        return JSONResponse({"queues": [dataclasses.asdict(q) for q in queues]})

    async def get_queue(request: Request) -> Response:
        name = queue_of(request)
        for queue in await admin_ops().list_queues():
            if queue.name == name:
                return JSONResponse(dataclasses.asdict(queue))
        raise NotFoundError(f"No queue is named {name!r}.")

    async def pause(request: Request) -> Response:
        return JSONResponse(dataclasses.asdict(await admin_ops().pause_queue(queue_of(request))))

    async def resume(request: Request) -> Response:
        return JSONResponse(dataclasses.asdict(await admin_ops().resume_queue(queue_of(request))))

    async def purge(request: Request) -> Response:
        return JSONResponse({"purged": await admin_ops().purge_queue(queue_of(request))})

    async def list_tasks(request: Request) -> Response:
        name = queue_of(request)
        limit, cursor = page_args(request)
        view = request.query_params.get("view", "basic")
        if view not in ("basic", "full"):
            raise BadRequestError("view must be basic or full.")
        page = await admin_ops().list_tasks(name, limit=limit, cursor=cursor, full=view == "full")
        return JSONResponse(
            {"tasks": [_task_json(t) for t in page.items], "next_cursor": page.next_cursor}
        )

    async def get_task(request: Request) -> Response:
        task = await admin_ops().get_task(queue_of(request), str(request.path_params["task"]))
        return JSONResponse(_task_json(task))

    async def delete_task(request: Request) -> Response:
        await admin_ops().delete_task(queue_of(request), str(request.path_params["task"]))
        return JSONResponse({"deleted": 1})

    async def list_dead_letters(request: Request) -> Response:
        name = queue_of(request)
        limit, cursor = page_args(request)
        page = await admin_ops().list_dead_letters(name, limit=limit, cursor=cursor)
        return JSONResponse(
            {
                "dead_letters": [_dead_letter_json(d) for d in page.items],
                "next_cursor": page.next_cursor,
            }
        )

    async def replay_all(request: Request) -> Response:
        return JSONResponse({"replayed": await admin_ops().replay_dead_letters(queue_of(request))})

    async def replay_one(request: Request) -> Response:
        name, task = queue_of(request), str(request.path_params["task"])
        await admin_ops().replay_dead_letter(name, task)
        return JSONResponse({"replayed": 1})

    async def drop(request: Request) -> Response:
        name, task = queue_of(request), str(request.path_params["task"])
        await admin_ops().drop_dead_letter(name, task)
        return JSONResponse({"deleted": 1})

    async def list_spool(request: Request) -> Response:
        limit, cursor = page_args(request)
        spool = getattr(runtime.engine, "spool", None)
        if not isinstance(spool, SpoolListing):
            # A resource this proxy does not have, as an unknown queue is: not a server
            # error (5xx), whatever the engine.
            raise NotFoundError(
                "No spool is configured: it is a Cloud Tasks engine option (cloudtasks.spool)."
            )
        page = await spool.list_entries(limit=limit, cursor=cursor)
        entries = [dataclasses.asdict(entry) for entry in page.items]
        for entry in entries:
            del entry["request"]
        return JSONResponse(
            {
                "depth": spool.depth(),
                "bytes": spool.size(),
                "oldest_age": spool.oldest_age(),
                "breaker": spool.breaker_state(),
                "tasks": entries,
                "next_cursor": page.next_cursor,
            }
        )

    async def proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        status, headers, body = error_response_parts(exc)
        return Response(
            body, status_code=status, headers={k.decode(): v.decode() for k, v in headers}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: ProxyError
        if exc.status_code == 405:
            error = MethodNotAllowedError(f"{request.method} is not allowed on {request.url.path}.")
        else:
            error = NotFoundError(f"No admin endpoint at {request.url.path}.")
        return await proxy_error(request, error)

    q = "/queues/{queue}"
    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/queues", list_queues, methods=["GET"]),
            Route(q, get_queue, methods=["GET"]),
            Route(f"{q}/pause", guarded(pause), methods=["POST"]),
            Route(f"{q}/resume", guarded(resume), methods=["POST"]),
            Route(f"{q}/purge", guarded(purge), methods=["POST"]),
            Route(f"{q}/tasks", guarded(list_tasks), methods=["GET"]),
            Route(q + "/tasks/{task}", guarded(get_task), methods=["GET"]),
            Route(q + "/tasks/{task}", guarded(delete_task), methods=["DELETE"]),
            Route(f"{q}/dead-letters", guarded(list_dead_letters), methods=["GET"]),
            Route(f"{q}/dead-letters/replay", guarded(replay_all), methods=["POST"]),
            Route(q + "/dead-letters/{task}/replay", guarded(replay_one), methods=["POST"]),
            Route(q + "/dead-letters/{task}", guarded(drop), methods=["DELETE"]),
            Route("/spool", guarded(list_spool), methods=["GET"]),
        ],
        exception_handlers={ProxyError: proxy_error, HTTPException: http_error},
    )
