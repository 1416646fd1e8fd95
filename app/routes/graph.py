from typing import Annotated

from fastapi import APIRouter, Query

from app import rag
from app.deps import ReadableKnowledgeBase, ServicesDep
from app.schemas import (CommunityList, CommunityPublic, EntityList, EntityNeighbourPublic, EntityPublic)
from app.services import Services

router = APIRouter(prefix="/v1/knowledge-bases/{kb}/graph", tags=["graph"])


def _chunk_ids(services: Services, rowids: list[int]) -> list[str]:
    return [rag.chunk_id(row.document_id, row.position) for row in services.catalog.get_chunks(rowids)]


@router.get("/entities", response_model=EntityList)
def list_entities(knowledge_base: ReadableKnowledgeBase, services: ServicesDep,
                  q: Annotated[str, Query(min_length=1, max_length=200, description="Name or part of a name.")],
                  limit: Annotated[int, Query(ge=1, le=100)] = 20) -> EntityList:
    """Find entities whose normalised name contains q, with their mentions and strongest relations."""
    entities = services.indices.get(knowledge_base.id).find_entities(q, limit=limit)
    data = [EntityPublic(name=entity.name, key=entity.key, mention_count=entity.mention_count,
                         chunk_ids=_chunk_ids(services, entity.chunk_rowids),
                         neighbours=[EntityNeighbourPublic(name=neighbour.name, weight=neighbour.weight)
                                     for neighbour in entity.neighbours])
            for entity in entities]
    return EntityList(data=data, count=len(data))


@router.get("/communities", response_model=CommunityList)
def list_communities(knowledge_base: ReadableKnowledgeBase, services: ServicesDep,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> CommunityList:
    """List the entity communities, largest first, with their extractive summaries."""
    communities, computing = services.indices.get(knowledge_base.id).communities()
    data = [CommunityPublic(id=community.id, size=len(community.entity_ids), entities=community.entity_names,
                            summary=community.summary, chunk_ids=_chunk_ids(services, community.rowids))
            for community in communities[:limit]]
    return CommunityList(data=data, count=len(data), computing=computing)
