import sqlite3

from fastapi import APIRouter, Depends

from app.deps import ServicesDep, require_admin
from app.errors import Conflict
from app.schemas import TenantCreate, TenantCreated

router = APIRouter(prefix="/v1/tenants", tags=["tenants"])


@router.post("", status_code=201, response_model=TenantCreated, dependencies=[Depends(require_admin)])
def create_tenant(body: TenantCreate, services: ServicesDep) -> TenantCreated:
    """Create a tenant and its first API key (admin key required; the key is shown only here)."""
    try:
        tenant, key = services.catalog.create_tenant(name=body.name, role=body.role)
    except sqlite3.IntegrityError as error:
        raise Conflict(f"tenant {body.name!r} already exists; choose another name") from error
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)
