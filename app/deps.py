"""Injected dependencies: the shared services, the calling tenant, and the knowledge base it names."""

from typing import Annotated

import hmac

from fastapi import Depends, Header, Request

from app.errors import Forbidden, NotFound, Unauthorized
from app.services import Services
from storage.catalog import ApiKey, KnowledgeBase, Tenant


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


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


def current_key(services: ServicesDep, authorization: Annotated[str | None, Header()] = None) -> tuple[Tenant, ApiKey]:
    found = services.catalog.authenticate(_bearer(authorization))
    if found is None:
        raise Unauthorized("invalid or revoked API key")
    return found


def current_tenant(key: Annotated[tuple[Tenant, ApiKey], Depends(current_key)]) -> Tenant:
    return key[0]


def writer_tenant(key: Annotated[tuple[Tenant, ApiKey], Depends(current_key)]) -> Tenant:
    tenant, api_key = key
    if api_key.role != "read-write":
        raise Forbidden("this API key is read-only; use a read-write key to change data")
    return tenant


TenantDep = Annotated[Tenant, Depends(current_tenant)]
WriterDep = Annotated[Tenant, Depends(writer_tenant)]


def _resolve(services: Services, tenant: Tenant, kb: str) -> KnowledgeBase:
    knowledge_base = services.catalog.resolve_knowledge_base(tenant_id=tenant.id, reference=kb)
    if knowledge_base is None:
        # Another tenant's knowledge base is reported exactly like a missing one.
        raise NotFound(f"knowledge base {kb!r} not found")
    return knowledge_base


def readable_knowledge_base(kb: str, services: ServicesDep, tenant: TenantDep) -> KnowledgeBase:
    return _resolve(services, tenant, kb)


def writable_knowledge_base(kb: str, services: ServicesDep, tenant: WriterDep) -> KnowledgeBase:
    return _resolve(services, tenant, kb)


ReadableKnowledgeBase = Annotated[KnowledgeBase, Depends(readable_knowledge_base)]
WritableKnowledgeBase = Annotated[KnowledgeBase, Depends(writable_knowledge_base)]
