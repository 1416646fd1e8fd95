"""Search and question answering over one knowledge base, independent of the HTTP layer."""

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace

from app.errors import BackboneFailed, InvalidInput, NotReady
from app.services import Services
from generation.base import GenerationError, Generator, Message
from generation.prompts import NO_CONTEXT_ANSWER, Passage, build_messages, cited_markers, pack_passages
from retrievers.fusion import corroborates, reciprocal_rank_fusion
from retrievers.milvus import IndexUnavailable
from retrievers.rerank import rerank as reranked
from storage.catalog import KnowledgeBase

logger = logging.getLogger(__name__)

RETRIEVERS = ("bm25", "dense", "graph")
# Each retriever contributes this many candidates to fusion, or top_k when larger; RRF needs some depth
# below the final cut so that a chunk ranked moderately by both retrievers can rise.
FUSION_DEPTH = 100
SNIPPET_CHARACTERS = 300


@dataclass
class SearchHit:
    rowid: int
    chunk_id: str
    document_id: str
    title: str
    text: str
    score: float
    ranks: dict[str, int]
    metadata: dict
    rerank_score: float | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class Citation:
    marker: int
    document_id: str
    chunk_id: str
    score: float
    snippet: str


@dataclass
class AnswerResult:
    answer: str
    citations: list[Citation]
    timings_ms: dict[str, float]


def chunk_id(document_id: str, position: int) -> str:
    return f"{document_id}#{position}"


def _elapsed_ms(started: float) -> float:
    return round(1000 * (time.perf_counter() - started), 2)


def search(services: Services, knowledge_base: KnowledgeBase, *, query: str, top_k: int,
           retrievers: list[str], rerank: str = "none", rerank_candidates: int = 20,
           generator_name: str | None = None) -> SearchResult:
    unknown = [name for name in retrievers if name not in RETRIEVERS]
    if unknown or not retrievers:
        raise InvalidInput(f"retrievers must be a non-empty list drawn from {list(RETRIEVERS)}, got {retrievers}")
    timings: dict[str, float] = {}
    # Resolved before retrieval so that an unavailable reranker fails the same way on an empty knowledge base.
    reranker = services.reranker(rerank, generator_name or knowledge_base.generator) if rerank != "none" else None
    index = services.indices.get(knowledge_base.id)

    query_embedding = None
    if "dense" in retrievers:
        started = time.perf_counter()
        # Includes any wait for the batch that this query shares with concurrent searches.
        query_embedding = services.query_embedder.embed_query(query)
        timings["embed_query"] = _elapsed_ms(started)

    rankings = {}
    depth = max(top_k, FUSION_DEPTH)
    for name in dict.fromkeys(retrievers):
        started = time.perf_counter()
        try:
            rankings[name] = index.search(retriever=name, query=query, query_embedding=query_embedding,
                                          top_k=depth)
        except IndexUnavailable as error:
            raise NotReady(f"the index backend of this knowledge base did not answer; retry shortly ({error})") from error
        timings[name] = _elapsed_ms(started)

    started = time.perf_counter()
    if "graph" in rankings and len(rankings) > 1:
        others = [hits for name, hits in rankings.items() if name != "graph"]
        if not corroborates(rankings["graph"], others):
            del rankings["graph"]
    cut = max(top_k, rerank_candidates) if rerank != "none" else top_k
    fused = reciprocal_rank_fusion(rankings)[:cut]
    rows = {row.rowid: row for row in services.catalog.get_chunks([hit.rowid for hit in fused])}
    hits = [
        SearchHit(rowid=hit.rowid, chunk_id=chunk_id(rows[hit.rowid].document_id, rows[hit.rowid].position),
                  document_id=rows[hit.rowid].document_id, title=rows[hit.rowid].title, text=rows[hit.rowid].text,
                  score=hit.score, ranks=hit.ranks, metadata=rows[hit.rowid].metadata)
        # A chunk deleted between search and fetch is skipped rather than shown.
        for hit in fused if hit.rowid in rows
    ]
    timings["fuse_and_fetch"] = _elapsed_ms(started)

    if reranker is not None and hits:
        # Only the first rerank_candidates hits are judged. Hits beyond them, when top_k is larger, keep their
        # fused order after the judged ones.
        started = time.perf_counter()
        candidates = hits[:rerank_candidates]
        ordered = reranked(reranker, query,
                           [f"{hit.title}\n{hit.text}" if hit.title else hit.text for hit in candidates])
        hits = [replace(candidates[entry.index], rerank_score=entry.score) for entry in ordered] + \
            hits[rerank_candidates:]
        timings["rerank"] = _elapsed_ms(started)
    return SearchResult(hits=hits[:top_k], timings_ms=timings)


@dataclass
class AnswerPlan:
    """Everything decided before generation: the backbone, the packed passages and the prompt."""

    generator: Generator
    passages: list[Passage]
    messages: list[Message]
    max_new_tokens: int
    timings_ms: dict[str, float]
    started: float


def plan_answer(services: Services, knowledge_base: KnowledgeBase, *, query: str, top_k: int,
                retrievers: list[str], max_new_tokens: int | None = None, rerank: str = "none",
                rerank_candidates: int = 20, generator_name: str | None = None, mode: str = "local") -> AnswerPlan:
    started = time.perf_counter()
    generator = services.backbone(generator_name or knowledge_base.generator)
    if mode == "global":
        result = community_search(services, knowledge_base, query=query, top_k=top_k)
    else:
        result = search(services, knowledge_base, query=query, top_k=top_k, retrievers=retrievers, rerank=rerank,
                        rerank_candidates=rerank_candidates, generator_name=generator_name or knowledge_base.generator)
    timings = {f"search_{name}": value for name, value in result.timings_ms.items()}

    max_new_tokens = max_new_tokens or services.settings.generator_max_new_tokens
    window = min(generator.context_window, services.settings.generator_context_tokens)
    if max_new_tokens >= window:
        raise InvalidInput(f"max_new_tokens ({max_new_tokens}) must be smaller than the context window of "
                           f"{generator.name} ({window} tokens)")
    budget = window - max_new_tokens
    candidates = [Passage(marker=i + 1, rowid=hit.rowid, document_id=hit.document_id, chunk_id=hit.chunk_id,
                          title=hit.title, text=hit.text, score=hit.score) for i, hit in enumerate(result.hits)]
    passages = pack_passages(candidates, generator=generator, question=query, budget=budget)
    messages = build_messages(query, passages)
    # Passages are counted one by one; the chat template adds tokens of its own, so check the whole prompt.
    count_prompt = getattr(generator, "prompt_tokens", None)
    while passages and count_prompt is not None and count_prompt(messages) > budget:
        passages = passages[:-1]
        messages = build_messages(query, passages)
    return AnswerPlan(generator=generator, passages=passages, messages=messages, max_new_tokens=max_new_tokens,
                      timings_ms=timings, started=started)


def community_search(services: Services, knowledge_base: KnowledgeBase, *, query: str, top_k: int) -> SearchResult:
    """Rank the knowledge graph's community summaries for a broad question, as hits the generator can cite.

    Each hit's text is a summary; its chunk and document are those of the first sentence the summary quotes.
    """
    started = time.perf_counter()
    found, computing = services.indices.get(knowledge_base.id).global_search(query, top_k)
    if not found and computing:
        raise NotReady("the knowledge graph's communities are still being computed; retry in a minute")
    rows = {row.rowid: row for row in services.catalog.get_chunks(
        [rowid for community_hit in found for rowid in community_hit.community.rowids])}
    hits = []
    for rank, community_hit in enumerate(found, start=1):
        community = community_hit.community
        row = next((rows[rowid] for rowid in community.rowids if rowid in rows), None)
        hits.append(SearchHit(
            rowid=row.rowid if row else -1, chunk_id=chunk_id(row.document_id, row.position) if row else "",
            document_id=row.document_id if row else "", title=f"Community {community.id}",
            text=community.summary, score=community_hit.score, ranks={"communities": rank},
            metadata={"community": community.id}))
    return SearchResult(hits=hits, timings_ms={"communities": _elapsed_ms(started)})


def citations_for(text: str, passages: list[Passage]) -> list[Citation]:
    markers = cited_markers(text, len(passages))
    # An answer that cites nothing still came from these passages, so they are listed as its sources.
    cited = [passages[marker - 1] for marker in markers] or passages
    return [Citation(marker=passage.marker, document_id=passage.document_id, chunk_id=passage.chunk_id,
                     score=passage.score, snippet=passage.text[:SNIPPET_CHARACTERS]) for passage in cited]


def answer(services: Services, knowledge_base: KnowledgeBase, **options) -> AnswerResult:
    """Retrieve, pack and generate; options are those of plan_answer."""
    plan = plan_answer(services, knowledge_base, **options)
    if not plan.passages:
        plan.timings_ms["total"] = _elapsed_ms(plan.started)
        return AnswerResult(answer=NO_CONTEXT_ANSWER, citations=[], timings_ms=plan.timings_ms)

    started = time.perf_counter()
    try:
        text = plan.generator.generate(plan.messages, max_new_tokens=plan.max_new_tokens)
    except GenerationError as error:
        raise BackboneFailed(str(error)) from error
    plan.timings_ms["generate"] = _elapsed_ms(started)
    plan.timings_ms["total"] = _elapsed_ms(plan.started)
    return AnswerResult(answer=text, citations=citations_for(text, plan.passages), timings_ms=plan.timings_ms)


def stream_answer(plan: AnswerPlan) -> Iterator[tuple[str, dict]]:
    """Yield ("token", {"text"}) events as the answer is generated, then one ("done", {...}) or ("error", {...})."""
    if not plan.passages:
        plan.timings_ms["total"] = _elapsed_ms(plan.started)
        yield "token", {"text": NO_CONTEXT_ANSWER}
        yield "done", {"answer": NO_CONTEXT_ANSWER, "citations": [], "timings_ms": plan.timings_ms}
        return

    started = time.perf_counter()
    pieces: list[str] = []
    try:
        for piece in plan.generator.stream(plan.messages, max_new_tokens=plan.max_new_tokens):
            pieces.append(piece)
            yield "token", {"text": piece}
    except GenerationError as error:
        logger.warning("generation failed mid-stream", extra={"backbone": plan.generator.name, "error": str(error)})
        yield "error", {"detail": str(error)}
        return
    text = "".join(pieces).strip()
    plan.timings_ms["generate"] = _elapsed_ms(started)
    plan.timings_ms["total"] = _elapsed_ms(plan.started)
    citations = [asdict(citation) for citation in citations_for(text, plan.passages)]
    yield "done", {"answer": text, "citations": citations, "timings_ms": plan.timings_ms}
