"""The terminal API as an ASGI app (FastAPI), served by ``prefsync api``.

Every error is JSON: ``{"error": {"code": ..., "message": ..., "details": ...}}``.
Request logs carry the route template, status, duration and terminal, never the
path, because paths contain customer ids.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pydantic
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from prefsync.api import admin, routes
from prefsync.api.errors import ApiError
from prefsync.api.wiring import Services, build_services
from prefsync.config import Settings
from prefsync.defaults.layers import LayerIdError
from prefsync.defaults.writer import LayerNotFound, VersionConflict, WriterBusy
from prefsync.errors import StoreUnavailable
from producers.delivery import PublishError

__all__ = ["create_app"]

log = structlog.get_logger()

API_VERSION = "1.0.0"


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Create the app; without ``services`` they are built when the app starts."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = services is None
        app.state.services = build_services(settings) if own else services
        app.state.services.start_republisher()
        app.state.services.republish_once()
        log.info("api.start", settings=settings.redacted())
        try:
            yield
        finally:
            log.info("api.stop")
            if own:
                app.state.services.stop()

    app = FastAPI(
        title="prefsync terminal API",
        version=API_VERSION,
        description="Customer preferences applied at the register: lookup, apply, "
        "confirm, reverse, preference updates and admin defaults.",
        lifespan=lifespan,
    )
    app.include_router(routes.router)
    app.include_router(admin.router)
    _add_error_handlers(app)
    app.middleware("http")(_log_requests)
    return app


def _error(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    details = extra.pop("details", None) or {}
    headers = extra.pop("headers", None)
    body = {"error": {"code": code, "message": message, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(
            exc.status, exc.code, exc.message, details=exc.details, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(
        _request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        problems = [
            {
                "location": ".".join(str(part) for part in error["loc"]),
                "message": error["msg"],
            }
            for error in exc.errors()
        ]
        first = problems[0] if problems else {"location": "", "message": "invalid"}
        message = f"invalid {first['location']}: {first['message']}"
        return _error(422, "invalid_request", message, details={"problems": problems})

    @app.exception_handler(pydantic.ValidationError)
    async def invalid_document(
        _request: Request, exc: pydantic.ValidationError
    ) -> JSONResponse:
        problems = [
            {"location": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        message = "invalid defaults document: " + "; ".join(
            f"{p['location']}: {p['message']}" for p in problems[:3]
        )
        return _error(422, "invalid_document", message, details={"problems": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(
        _request: Request, exc: StarletteHTTPException
    ) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(
            exc.status_code, "http_error"
        )
        return _error(exc.status_code, code, str(exc.detail), headers=exc.headers)

    _add_domain_handlers(app)


def _add_domain_handlers(app: FastAPI) -> None:
    simple: dict[type[Exception], tuple[int, str]] = {
        LayerIdError: (422, "invalid_layer"),
        VersionConflict: (409, "version_conflict"),
        LayerNotFound: (404, "layer_not_found"),
        WriterBusy: (503, "defaults_busy"),
        StoreUnavailable: (503, "store_unavailable"),
        PublishError: (503, "event_not_delivered"),
    }
    for exc_type, (status, code) in simple.items():

        async def handler(
            _request: Request, exc: Exception, status: int = status, code: str = code
        ) -> JSONResponse:
            log.warning("request.failed", code=code, error_class=type(exc).__name__)
            return _error(status, code, str(exc))

        app.add_exception_handler(exc_type, handler)

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> JSONResponse:
        log.error("request.crashed", error_class=type(exc).__name__, exc_info=exc)
        return _error(500, "internal_error", "internal error; see the server log")


async def _log_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    log.debug(
        "request.completed",
        method=request.method,
        route=getattr(route, "path", None),
        status=response.status_code,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )
    return response
