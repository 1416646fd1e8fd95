import json
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from app import rag
from app.deps import MetricsDep, ReadableKnowledgeBase, ServicesDep
from app.schemas import (CitationPublic, QueryRequest, QueryResponse, SearchHitPublic, SearchRequest,
                         SearchResponse)

router = APIRouter(prefix="/v1/knowledge-bases/{kb}", tags=["search"])


@router.post("/search", response_model=SearchResponse)
def search(body: SearchRequest, knowledge_base: ReadableKnowledgeBase, services: ServicesDep,
           metrics: MetricsDep) -> SearchResponse:
    """Retrieve chunks with the chosen retrievers, fused by reciprocal rank fusion."""
    result = rag.search(services, knowledge_base, query=body.query, top_k=body.top_k, retrievers=body.retrievers,
                        rerank=body.rerank, rerank_candidates=body.rerank_candidates)
    hits = [SearchHitPublic(chunk_id=hit.chunk_id, document_id=hit.document_id, score=hit.score, text=hit.text,
                            title=hit.title, ranks=hit.ranks, rerank_score=hit.rerank_score, metadata=hit.metadata)
            for hit in result.hits]
    metrics.observe_stages("search", result.timings_ms)
    return SearchResponse(hits=hits, timings_ms=result.timings_ms)


@router.post("/query", response_model=QueryResponse,
             responses={200: {"content": {"text/event-stream": {}}, "description": "JSON, or SSE when stream is true"}})
def query(body: QueryRequest, knowledge_base: ReadableKnowledgeBase, services: ServicesDep, metrics: MetricsDep):
    """Answer a question from the knowledge base, citing the passages used as [n] markers."""
    options = {"query": body.query, "top_k": body.top_k, "retrievers": body.retrievers,
               "max_new_tokens": body.max_new_tokens, "rerank": body.rerank,
               "rerank_candidates": body.rerank_candidates, "generator_name": body.generator,
               "mode": body.mode}
    if body.stream:
        # Retrieval and packing run before the response starts, so their errors still get a status code.
        plan = rag.plan_answer(services, knowledge_base, **options)
        events = (f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in rag.stream_answer(plan))
        return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    result = rag.answer(services, knowledge_base, **options)
    metrics.observe_stages("query", result.timings_ms)
    return QueryResponse(answer=result.answer, citations=[CitationPublic(**asdict(c)) for c in result.citations],
                         timings_ms=result.timings_ms)
