"""Injected dependencies: the shared services, the calling tenant and its limits, and the knowledge base it names.

Roles: the admin key (DOMAINRAG_ADMIN_KEY) manages tenants and their keys and reads no tenant data. A tenant's
read-only key may search, query and list; a read-write key may also change data and manage its tenant's keys.
"""

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import Forbidden, NotFound, Unauthorized
from app.limits import KeyLimits
from app.logs import set_request_knowledge_base, set_request_tenant
from app.metrics import Metrics
from app.services import Services
from storage.catalog import ApiKey, KnowledgeBase, Tenant


# Plain lookups are async so that FastAPI calls them on the event loop: a sync dependency costs a trip through
# the threadpool, and a search already makes several (key check, knowledge base lookup, the route itself).
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def get_limits(request: Request) -> KeyLimits:
    return request.app.state.limits


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


ServicesDep = Annotated[Services, Depends(get_services)]
LimitsDep = Annotated[KeyLimits, Depends(get_limits)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <api key>'")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("malformed Authorization header; send 'Authorization: Bearer <api key>'")
    return token.strip()


def require_admin(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> None:
    token = _bearer(authorization)
    admin_key = services.settings.admin_key
    if admin_key is None:
        raise Forbidden("tenant management is disabled: set DOMAINRAG_ADMIN_KEY and restart the service")

    if not hmac.compare_digest(token.encode(), admin_key.get_secret_value().encode()):
        raise Unauthorized("invalid admin key")


def current_key(services: ServicesDep, limits: LimitsDep,
                authorization: Annotated[str | None, Header()] = None) -> tuple[Tenant, ApiKey]:
    """Authenticate a tenant key and count the request against that key's rate limit."""
    found = services.catalog.authenticate(_bearer(authorization))
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    tenant, api_key = found
    set_request_tenant(tenant.id)
    limits.requests.acquire(api_key.id)
    return found


async def current_tenant(key: Annotated[tuple[Tenant, ApiKey], Depends(current_key)]) -> Tenant:
    return key[0]


def writer_tenant(key: Annotated[tuple[Tenant, ApiKey], Depends(current_key)]) -> Tenant:
    tenant, api_key = key
    if api_key.role != "read-write":
        raise Forbidden("this API key is read-only; use a read-write key to change data")
    return tenant


KeyDep = Annotated[tuple[Tenant, ApiKey], Depends(current_key)]
TenantDep = Annotated[Tenant, Depends(current_tenant)]
WriterDep = Annotated[Tenant, Depends(writer_tenant)]


def upload_slot(key: KeyDep, limits: LimitsDep) -> Iterator[None]:
    """Hold one of the calling key's concurrent-upload slots while the upload request runs."""
    with limits.uploads.hold(key[1].id):
        yield


UploadSlot = Depends(upload_slot)


def _resolve(services: Services, tenant: Tenant, kb: str) -> KnowledgeBase:
    knowledge_base = services.catalog.resolve_knowledge_base(tenant_id=tenant.id, reference=kb)
    if knowledge_base is None:
        # Another tenant's knowledge base is reported exactly like a missing one.
        raise NotFound(f"knowledge base {kb!r} not found")
    set_request_knowledge_base(knowledge_base.id)
    return knowledge_base


def readable_knowledge_base(kb: str, services: ServicesDep, tenant: TenantDep) -> KnowledgeBase:
    return _resolve(services, tenant, kb)


def writable_knowledge_base(kb: str, services: ServicesDep, tenant: WriterDep) -> KnowledgeBase:
    return _resolve(services, tenant, kb)


ReadableKnowledgeBase = Annotated[KnowledgeBase, Depends(readable_knowledge_base)]
WritableKnowledgeBase = Annotated[KnowledgeBase, Depends(writable_knowledge_base)]
