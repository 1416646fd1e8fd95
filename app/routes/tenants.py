import logging

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from app.deps import ServicesDep, require_admin
from app.errors import Conflict
from app.schemas import TenantCreate, TenantCreated
from storage.catalog import INTEGRITY_ERRORS

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/tenants", tags=["tenants"], dependencies=[Depends(require_admin)])


class TenantPublic(BaseModel):
    id: str
    name: str
    created_at: str


class TenantList(BaseModel):
    data: list[TenantPublic]
    count: int


@router.post("", status_code=201, response_model=TenantCreated)
def create_tenant(body: TenantCreate, services: ServicesDep) -> TenantCreated:
    """Create a tenant and its first API key (admin key required; the key is shown only here)."""
    try:
        tenant, key = services.catalog.create_tenant(name=body.name, role=body.role)
    except INTEGRITY_ERRORS as error:
        raise Conflict(f"tenant {body.name!r} already exists; choose another name") from error
    logger.info("tenant created", extra={"tenant": tenant.id})
    return TenantCreated(id=tenant.id, name=tenant.name, api_key=key)


@router.get("", response_model=TenantList)
def list_tenants(services: ServicesDep) -> TenantList:
    """List every tenant (admin key required)."""
    data = [TenantPublic(id=tenant.id, name=tenant.name, created_at=tenant.created_at)
            for tenant in services.catalog.list_tenants()]
    return TenantList(data=data, count=len(data))
