import logging
import time

from fastapi import APIRouter

from app.deps import ReadableKnowledgeBase, ServicesDep, TenantDep, WritableKnowledgeBase, WriterDep
from app.errors import Conflict, InvalidInput
from app.schemas import (KnowledgeBaseCreate, KnowledgeBaseDeleted, KnowledgeBaseList, KnowledgeBasePublic,
                         MigrationPublic, MigrationRequest)
from app.services import Services
from ingestion.chunking import ChunkingError, validate_chunking
from storage.catalog import INTEGRITY_ERRORS, KnowledgeBase
from storage.knowledge_base import AlreadyMigrated

logger = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/knowledge-bases", tags=["knowledge bases"])


def to_public(services: Services, knowledge_base: KnowledgeBase) -> KnowledgeBasePublic:
    documents, chunks = services.catalog.count_documents(knowledge_base.id)
    return KnowledgeBasePublic(id=knowledge_base.id, name=knowledge_base.name, chunk_size=knowledge_base.chunk_size,
                               chunk_overlap=knowledge_base.chunk_overlap, document_count=documents,
                               chunk_count=chunks, generator=knowledge_base.generator, backend=knowledge_base.backend,
                               created_at=knowledge_base.created_at)


@router.post("", status_code=201, response_model=KnowledgeBasePublic)
def create_knowledge_base(body: KnowledgeBaseCreate, services: ServicesDep, tenant: WriterDep) -> KnowledgeBasePublic:
    """Create an empty knowledge base for the calling tenant."""
    chunk_size = body.chunk_size or services.settings.chunk_size
    chunk_overlap = body.chunk_overlap if body.chunk_overlap is not None else services.settings.chunk_overlap
    try:
        validate_chunking(chunk_size, chunk_overlap, max_tokens=services.embedder.max_tokens)
    except ChunkingError as error:
        raise InvalidInput(str(error)) from error
    if body.generator is not None and body.generator not in services.generators.specs:
        raise InvalidInput(f"unknown generator {body.generator!r}; configured backbones: "
                           f"{sorted(services.generators.specs)}")
    # A name resolves to a knowledge base before an alias, so the new knowledge base would hide the alias.
    alias = next((row for row in services.catalog.list_aliases(tenant_id=tenant.id) if row["name"] == body.name), None)
    if alias is not None:
        raise Conflict(f"alias {body.name!r} already points to knowledge base {alias['knowledge_base_name']!r}; "
                       "choose another name, or delete the alias first")
    try:
        knowledge_base = services.catalog.create_knowledge_base(tenant_id=tenant.id, name=body.name,
                                                                chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                                                                generator=body.generator,
                                                                backend=body.backend or services.settings.default_backend)
    except INTEGRITY_ERRORS as error:
        raise Conflict(f"knowledge base {body.name!r} already exists; choose another name or delete it first") from error
    logger.info("knowledge base created", extra={"tenant": tenant.id, "knowledge_base": knowledge_base.id})
    return to_public(services, knowledge_base)


@router.get("", response_model=KnowledgeBaseList)
def list_knowledge_bases(services: ServicesDep, tenant: TenantDep) -> KnowledgeBaseList:
    """List the calling tenant's knowledge bases."""
    data = [to_public(services, kb) for kb in services.catalog.list_knowledge_bases(tenant_id=tenant.id)]
    return KnowledgeBaseList(data=data, count=len(data))


@router.get("/{kb}", response_model=KnowledgeBasePublic)
def get_knowledge_base(knowledge_base: ReadableKnowledgeBase, services: ServicesDep) -> KnowledgeBasePublic:
    """Show one knowledge base, named by id, name or alias."""
    return to_public(services, knowledge_base)


@router.delete("/{kb}", response_model=KnowledgeBaseDeleted)
def delete_knowledge_base(knowledge_base: WritableKnowledgeBase, services: ServicesDep) -> KnowledgeBaseDeleted:
    """Delete a knowledge base with its documents, indices, jobs and the aliases that point to it.

    The response lists those aliases, because a query through one of them now gets a 404."""
    aliases = services.catalog.delete_knowledge_base(knowledge_base.id)
    services.indices.drop(knowledge_base.id, backend=knowledge_base.backend)
    logger.info("knowledge base deleted", extra={"tenant": knowledge_base.tenant_id,
                                                 "knowledge_base": knowledge_base.id, "deleted_aliases": len(aliases)})
    return KnowledgeBaseDeleted(id=knowledge_base.id, name=knowledge_base.name, deleted_aliases=aliases)


@router.post("/{kb}/migrate", response_model=MigrationPublic)
def migrate_knowledge_base(body: MigrationRequest, knowledge_base: WritableKnowledgeBase,
                           services: ServicesDep) -> MigrationPublic:
    """Copy a knowledge base's chunks and stored embeddings into Milvus, without embedding anything, and switch
    its BM25 and dense retrievers onto it. Searches of it wait while the copy runs; its id, name and aliases
    stay the same."""
    if knowledge_base.backend == body.to:
        raise Conflict(f"knowledge base {knowledge_base.name!r} is already on the {body.to} backend")
    started = time.perf_counter()
    try:
        copied = services.indices.migrate(knowledge_base.id, tenant_id=knowledge_base.tenant_id)
    except AlreadyMigrated as error:
        raise Conflict(str(error)) from error
    seconds = round(time.perf_counter() - started, 2)
    logger.info("knowledge base migrated", extra={"tenant": knowledge_base.tenant_id,
                                                  "knowledge_base": knowledge_base.id, "backend": body.to,
                                                  "chunks": copied, "seconds": seconds})
    migrated = services.catalog.resolve_knowledge_base(tenant_id=knowledge_base.tenant_id, reference=knowledge_base.id)
    return MigrationPublic(knowledge_base=to_public(services, migrated), chunks_copied=copied, seconds=seconds)
