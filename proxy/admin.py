"""Admin listener: health, readiness and metrics, on a port of its own."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from proxy.errors import EngineUnavailableError, MethodNotAllowedError, NotFoundError, ProxyError
from proxy.problems import error_response_parts
from proxy.runtime import Runtime


def create_admin_app(runtime: Runtime) -> Starlette:
    """The admin Starlette app: ``/healthz``, ``/readyz``, ``/metrics``."""

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

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={ProxyError: proxy_error, HTTPException: http_error},
    )
