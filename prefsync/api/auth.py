"""Authentication, role checks and rate limiting as FastAPI dependencies.

Every call except health checks and the OpenAPI spec sends the terminal's token as
``Authorization: Bearer <token>`` and the staff role as ``X-Staff-Role``. A missing
or unknown token, a disabled terminal or a missing role is 401. A role the terminal
is not registered for, or one the endpoint does not allow, is 403. Each terminal has
a token bucket; an exhausted bucket is 429 with ``Retry-After``. Rejections are
logged with the route template, never the path, so no customer id reaches the log.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import structlog
from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from prefsync.api.errors import ApiError
from prefsync.api.service import Caller
from prefsync.api.terminals import ROLES
from prefsync.api.wiring import Services

__all__ = ["get_services", "require_roles"]

log = structlog.get_logger()

_bearer = HTTPBearer(auto_error=False, description="The terminal's token")
STAFF_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"


def get_services(request: Request) -> Services:
    """Return the app's services."""
    return request.app.state.services  # type: ignore[no-any-return]


def _route_of(request: Request) -> str:
    route = request.scope.get("route")
    return getattr(route, "path", "unknown")


def _reject(
    request: Request,
    services: Services,
    *,
    status: int,
    code: str,
    message: str,
    terminal_id: str | None = None,
    role: str | None = None,
) -> ApiError:
    services.metrics.rejected.labels(code).inc()
    log.warning(
        "auth.rejected",
        reason=code,
        route=_route_of(request),
        method=request.method,
        terminal_id=terminal_id,
        role=role if role in ROLES else None,
    )
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    return ApiError(status, code, message, headers=headers)


def require_roles(*roles: str) -> Callable[..., Caller]:
    """Return a dependency that authenticates the terminal and checks the role."""

    def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
        x_staff_role: str | None = Header(
            None, description=f"Staff role: one of {', '.join(ROLES)}", max_length=32
        ),
        x_staff_id: str | None = Header(
            None, description="Staff member's id", pattern=STAFF_ID_PATTERN
        ),
        services: Services = Depends(get_services),  # noqa: B008
    ) -> Caller:
        if credentials is None:
            raise _reject(
                request,
                services,
                status=401,
                code="missing_token",
                message="send Authorization: Bearer <terminal token>",
            )
        terminal = services.terminals.authenticate(credentials.credentials)
        if terminal is None or terminal.disabled:
            raise _reject(
                request,
                services,
                status=401,
                code="invalid_token",
                message="the token is unknown or its terminal is disabled; register "
                "the terminal with `prefsync terminals add`",
            )
        if not x_staff_role:
            raise _reject(
                request,
                services,
                status=401,
                code="missing_role",
                message="send the staff role in the X-Staff-Role header",
                terminal_id=terminal.terminal_id,
            )
        if x_staff_role not in terminal.roles or x_staff_role not in roles:
            raise _reject(
                request,
                services,
                status=403,
                code="role_not_allowed",
                message=f"role {x_staff_role!r} may not call this endpoint from "
                f"terminal {terminal.terminal_id}; allowed here: {', '.join(roles)}",
                terminal_id=terminal.terminal_id,
                role=x_staff_role,
            )
        wait_s = services.limiter.acquire(terminal.terminal_id)
        if wait_s > 0:
            services.metrics.rejected.labels("rate_limited").inc()
            log.warning(
                "auth.rate_limited",
                terminal_id=terminal.terminal_id,
                route=_route_of(request),
            )
            raise ApiError(
                429,
                "rate_limited",
                f"terminal {terminal.terminal_id} exceeded "
                f"{services.settings.api_rate_per_s:g} requests per second; retry "
                "later",
                headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
            )
        return Caller(terminal.terminal_id, terminal.store_id, x_staff_role, x_staff_id)

    return dependency
