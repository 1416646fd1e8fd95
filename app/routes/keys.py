"""API key management: the admin manages any tenant's keys, a tenant's read-write key manages its own.

A key is shown once, when it is created; listings show its prefix (the first 12 characters) so that an
operator can tell keys apart. A revoked key stays listed with its revocation time and authenticates no more.
A read-only key may list its tenant's keys but not create or revoke them, so it cannot raise its own role.
"""

import logging
from typing import Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from app.deps import ServicesDep, TenantDep, WriterDep, require_admin
from app.errors import NotFound
from app.schemas import RequestModel
from app.services import Services
from storage.catalog import ApiKey, Tenant

logger = logging.getLogger(__name__)

tenant_router = APIRouter(prefix="/v1/keys", tags=["keys"])
admin_router = APIRouter(prefix="/v1/tenants/{tenant_id}/keys", tags=["keys"], dependencies=[Depends(require_admin)])

Role = Literal["read-only", "read-write"]


class ApiKeyCreate(RequestModel):
    role: Role = Field("read-only", description="'read-only' (search, query, list) or 'read-write' (also change data).")


class ApiKeyPublic(BaseModel):
    id: str
    prefix: str = Field(description="The key's first 12 characters, enough to recognise it.")
    role: Role
    created_at: str
    revoked_at: str | None


class ApiKeyCreated(ApiKeyPublic):
    api_key: str = Field(description="Shown once; only a salted hash is stored.")


class ApiKeyList(BaseModel):
    data: list[ApiKeyPublic]
    count: int


def _public(key: ApiKey) -> ApiKeyPublic:
    return ApiKeyPublic(id=key.id, prefix=key.prefix, role=key.role, created_at=key.created_at,
                        revoked_at=key.revoked_at)


def _create(services: Services, tenant_id: str, role: str) -> ApiKeyCreated:
    record, key = services.catalog.create_api_key(tenant_id=tenant_id, role=role)
    logger.info("api key created", extra={"tenant": tenant_id, "key_prefix": record.prefix, "role": role})
    return ApiKeyCreated(**_public(record).model_dump(), api_key=key)


def _list(services: Services, tenant_id: str) -> ApiKeyList:
    data = [_public(key) for key in services.catalog.list_api_keys(tenant_id=tenant_id)]
    return ApiKeyList(data=data, count=len(data))


def _revoke(services: Services, tenant_id: str, key_id: str) -> ApiKeyPublic:
    record = services.catalog.revoke_api_key(tenant_id=tenant_id, key_id=key_id)
    if record is None:
        raise NotFound(f"API key {key_id!r} not found")
    logger.info("api key revoked", extra={"tenant": tenant_id, "key_prefix": record.prefix})
    return _public(record)


def _tenant(services: Services, tenant_id: str) -> Tenant:
    tenant = services.catalog.get_tenant(tenant_id)
    if tenant is None:
        raise NotFound(f"tenant {tenant_id!r} not found")
    return tenant


@tenant_router.post("", status_code=201, response_model=ApiKeyCreated)
def create_own_key(body: ApiKeyCreate, services: ServicesDep, tenant: WriterDep) -> ApiKeyCreated:
    """Create another key for the calling tenant (read-write key required); the key is shown only here."""
    return _create(services, tenant.id, body.role)


@tenant_router.get("", response_model=ApiKeyList)
def list_own_keys(services: ServicesDep, tenant: TenantDep) -> ApiKeyList:
    """List the calling tenant's keys by prefix, revoked ones included."""
    return _list(services, tenant.id)


@tenant_router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_own_key(key_id: str, services: ServicesDep, tenant: WriterDep) -> ApiKeyPublic:
    """Revoke one of the calling tenant's keys, the calling key included (read-write key required)."""
    return _revoke(services, tenant.id, key_id)


@admin_router.post("", status_code=201, response_model=ApiKeyCreated)
def create_tenant_key(tenant_id: str, body: ApiKeyCreate, services: ServicesDep) -> ApiKeyCreated:
    """Create a key for a tenant (admin key required); the key is shown only here."""
    return _create(services, _tenant(services, tenant_id).id, body.role)


@admin_router.get("", response_model=ApiKeyList)
def list_tenant_keys(tenant_id: str, services: ServicesDep) -> ApiKeyList:
    """List a tenant's keys by prefix, revoked ones included (admin key required)."""
    return _list(services, _tenant(services, tenant_id).id)


@admin_router.delete("/{key_id}", response_model=ApiKeyPublic)
def revoke_tenant_key(tenant_id: str, key_id: str, services: ServicesDep) -> ApiKeyPublic:
    """Revoke a tenant's key (admin key required)."""
    return _revoke(services, _tenant(services, tenant_id).id, key_id)
