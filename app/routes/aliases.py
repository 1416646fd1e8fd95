import re

from fastapi import APIRouter, Response

from app.deps import ServicesDep, TenantDep, WriterDep
from app.errors import Conflict, InvalidInput, NotFound
from app.schemas import NAME_PATTERN, NAME_RULE, AliasList, AliasPublic, AliasUpdate

router = APIRouter(prefix="/v1/aliases", tags=["aliases"])


@router.put("/{alias}", response_model=AliasPublic)
def set_alias(alias: str, body: AliasUpdate, services: ServicesDep, tenant: WriterDep) -> AliasPublic:
    """Point an alias at a knowledge base in one transaction; queries through the alias switch at once."""
    if not re.fullmatch(NAME_PATTERN, alias):
        raise InvalidInput(f"invalid alias {alias!r}: use {NAME_RULE}")
    target = services.catalog.resolve_knowledge_base(tenant_id=tenant.id, reference=body.knowledge_base)
    if target is None:
        raise NotFound(f"knowledge base {body.knowledge_base!r} not found")
    if target.name == alias:
        raise InvalidInput(f"alias {alias!r} would shadow the knowledge base of the same name; choose another alias")
    # A name resolves to a knowledge base before an alias, so an alias named after another one is never reached.
    if any(knowledge_base.name == alias for knowledge_base in services.catalog.list_knowledge_bases(tenant_id=tenant.id)):
        raise Conflict(f"a knowledge base named {alias!r} already exists, so alias {alias!r} would never be "
                       "reached; choose another alias")
    updated_at = services.catalog.set_alias(tenant_id=tenant.id, name=alias, knowledge_base_id=target.id)
    return AliasPublic(name=alias, knowledge_base_id=target.id, knowledge_base_name=target.name, updated_at=updated_at)


@router.get("", response_model=AliasList)
def list_aliases(services: ServicesDep, tenant: TenantDep) -> AliasList:
    """List the calling tenant's aliases."""
    data = [AliasPublic(**row) for row in services.catalog.list_aliases(tenant_id=tenant.id)]
    return AliasList(data=data, count=len(data))


@router.delete("/{alias}", status_code=204)
def delete_alias(alias: str, services: ServicesDep, tenant: WriterDep) -> Response:
    """Remove an alias; the knowledge base it pointed to is kept."""
    if not services.catalog.delete_alias(tenant_id=tenant.id, name=alias):
        raise NotFound(f"alias {alias!r} not found")
    return Response(status_code=204)
