"""Admin routes: defaults layers (read, write, delete), their audit trail and the
effective policy of a store."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query

from prefsync.api.auth import get_services, require_roles
from prefsync.api.errors import ApiError
from prefsync.api.models import ID_PATTERN, ErrorResponse, LayerRecordOut, LayerWrite
from prefsync.api.routes import ERRORS
from prefsync.api.service import Caller
from prefsync.api.wiring import Services
from prefsync.defaults.layers import BUILTIN_DEFAULTS, LAYER_ID_PATTERN
from prefsync.defaults.registry import LayerRecord

__all__ = ["router"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

LayerId = Annotated[
    str,
    Path(
        pattern=f"^(?:{LAYER_ID_PATTERN.pattern})$",
        description="global, region:<id> or store:<id>",
    ),
]
ServicesDep = Annotated[Services, Depends(get_services)]
Admin = Annotated[Caller, Depends(require_roles("admin"))]
AdminReader = Annotated[Caller, Depends(require_roles("admin", "analytics"))]
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    404: {"model": ErrorResponse, "description": "no such layer"},
    409: {"model": ErrorResponse, "description": "the layer changed meanwhile"},
}


def _out(record: LayerRecord) -> dict[str, Any]:
    return {
        "layer_id": record.layer_id,
        "version": record.version,
        "document": dict(record.document),
        "deleted": record.deleted,
        "changed_at_ms": record.changed_at_ms,
        "changed_by": dict(record.changed_by),
        "reason": record.reason,
    }


def _actor(caller: Caller) -> dict[str, Any]:
    return {
        "terminal_id": caller.terminal_id,
        "role": caller.role,
        "staff_id": caller.staff_id,
    }


@router.get("/defaults", responses=ERRORS)
def list_layers(caller: AdminReader, services: ServicesDep) -> dict[str, Any]:
    """Return every layer with its version, and the built-in defaults below them."""
    del caller
    registry = services.watcher.registry
    return {
        "builtin": BUILTIN_DEFAULTS,
        "layers": [_out(record) for _, record in sorted(registry.layers.items())],
    }


@router.get(
    "/defaults/{layer_id}", response_model=LayerRecordOut, responses=WRITE_ERRORS
)
def get_layer(
    layer_id: LayerId, caller: AdminReader, services: ServicesDep
) -> dict[str, Any]:
    """Return the newest version of one layer."""
    del caller
    record = services.watcher.registry.layers.get(layer_id)
    if record is None:
        raise ApiError(404, "layer_not_found", f"layer {layer_id} was never written")
    return _out(record)


@router.put(
    "/defaults/{layer_id}", response_model=LayerRecordOut, responses=WRITE_ERRORS
)
def put_layer(
    layer_id: LayerId, body: LayerWrite, caller: Admin, services: ServicesDep
) -> dict[str, Any]:
    """Store a new version of a layer; every API and worker process applies it."""
    record = services.defaults_writer.write(
        layer_id,
        body.document,
        expected_version=body.expected_version,
        changed_by=_actor(caller),
        reason=body.reason,
    )
    return _out(record)


@router.delete(
    "/defaults/{layer_id}", response_model=LayerRecordOut, responses=WRITE_ERRORS
)
def delete_layer(
    layer_id: LayerId,
    caller: Admin,
    services: ServicesDep,
    expected_version: Annotated[int, Query(ge=1, le=1_000_000_000)],
    reason: Annotated[str, Query(min_length=1, max_length=500)],
) -> dict[str, Any]:
    """Delete a layer (as a new version), so lower layers apply again."""
    record = services.defaults_writer.write(
        layer_id,
        None,
        expected_version=expected_version,
        changed_by=_actor(caller),
        reason=reason,
    )
    return _out(record)


@router.get("/defaults-audit", responses=ERRORS)
def audit(
    caller: Admin,
    services: ServicesDep,
    layer_id: Annotated[str | None, Query(max_length=80)] = None,
) -> dict[str, Any]:
    """Return every version ever written, oldest first, optionally for one layer."""
    del caller
    trail = services.watcher.registry.audit
    return {
        "versions": [
            _out(record)
            for record in trail
            if layer_id is None or record.layer_id == layer_id
        ]
    }


@router.get("/policy", responses=ERRORS)
def policy(
    caller: AdminReader,
    services: ServicesDep,
    store_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
) -> dict[str, Any]:
    """Return the effective defaults of a store and the layer that set each value."""
    del caller
    effective = services.lookup.policy(store_id)
    loyalty = effective.loyalty
    return {
        "store_id": store_id,
        "layers": list(effective.chain),
        "default_channel": effective.default_channel,
        "time_zone": effective.time_zone,
        "region": effective.region,
        "channels": {k: sorted(v) for k, v in effective.channel_categories.items()},
        "terminal_writable_fields": sorted(effective.terminal_writable_fields),
        "loyalty": {
            "points_per_currency_unit": str(loyalty.points_per_currency_unit),
            "default_tier": loyalty.default_tier,
            "expired_tier": loyalty.expired_tier,
            "excluded_categories": sorted(loyalty.excluded_categories),
            "tiers": {
                name: {
                    "discount_percent": str(rule.discount_percent),
                    "points_multiplier": str(rule.points_multiplier),
                }
                for name, rule in loyalty.tiers.items()
            },
        },
        "origins": dict(effective.origins),
    }
