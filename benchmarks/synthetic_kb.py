"""Build a data directory holding one knowledge base of synthetic chunks, without embedding those chunks.

The chunks come from `SyntheticCorpus`, as in benchmarks/scale.py: words drawn by SciFact's word frequencies,
vectors that perturb real MiniLM embeddings of SciFact chunks. Only those few hundred SciFact chunks go through
the embedder. The synthetic chunks and their vectors are written with the product's own classes, as an
operator's bulk load would. `Catalog.replace_document` stores each document with precomputed embeddings.
`IndexRegistry` then builds the BM25 and dense indices from the catalog, and the index saves its snapshot. A
service started on the directory loads that snapshot as it would after its own ingestion.

The knowledge base has no entity graph, so the service must run with DOMAINRAG_GRAPH_INDEX=false. With the graph
on, it would rebuild the graph from the catalog when the knowledge base opens. On this synthetic text the
extractor found about 15 entities per chunk (77,217 in 5,000 chunks), so a million chunks would mean millions of
entities held in memory and millions of names to embed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from app.settings import Settings
from benchmarks.common import SyntheticCorpus
from ingestion.loaders.base import ParsedDocument
from ingestion.loaders.ndjson import iter_ndjson
from ingestion.pipeline import prepare
from retrievers.embedders import Embedder
from storage.catalog import Catalog, NewChunk
from storage.knowledge_base import IndexRegistry

logger = logging.getLogger("benchmarks.synthetic_kb")

# Written last, so a directory whose build was interrupted is never taken for a finished one.
DESCRIPTION_FILE = "synthetic-knowledge-base.json"
TENANT = "synthetic"
KNOWLEDGE_BASE = "synthetic"
# Chunks generated and stored per round, which bounds the memory the texts and vectors take.
BATCH_CHUNKS = 20_000


@dataclass(frozen=True)
class SyntheticKnowledgeBase:
    """Description of a prepared data directory, stored as JSON in DESCRIPTION_FILE."""

    chunks: int
    chunks_per_document: int
    seed: int
    base_documents: int
    base_vectors: int
    embedder: str
    tenant_id: str
    knowledge_base_id: str
    knowledge_base: str
    build_s: float


def scifact_chunk_embeddings(corpus_path: Path, documents: int, embedder: Embedder, *, chunk_size: int,
                             chunk_overlap: int) -> np.ndarray:
    """Chunk the first `documents` SciFact abstracts as ingestion does and embed the chunks as it does."""
    lines = corpus_path.read_bytes().splitlines()[:documents]
    texts = []
    for parsed in iter_ndjson(b"\n".join(lines), source=corpus_path.name):
        if not isinstance(parsed, ParsedDocument):
            raise ValueError(f"{corpus_path}: {parsed.source}: {parsed.message}")
        prepared = prepare(parsed, source=corpus_path.name, chunk_size=chunk_size, chunk_overlap=chunk_overlap,
                           token_offsets=embedder.token_offsets)
        # The ingestion job embeds the title with each chunk (app.jobs.JobRunner._write_batch).
        texts.extend(f"{prepared.title}\n{chunk.text}" if prepared.title else chunk.text for chunk in prepared.chunks)
    return embedder.embed(texts)


def read_description(data_dir: Path) -> SyntheticKnowledgeBase | None:
    path = data_dir / DESCRIPTION_FILE
    if not path.exists():
        return None
    return SyntheticKnowledgeBase(**json.loads(path.read_text()))


def prepare_knowledge_base(data_dir: Path, *, chunks: int, corpus_path: Path, embedder: Embedder,
                           chunks_per_document: int = 10, seed: int = 0,
                           base_documents: int = 500) -> SyntheticKnowledgeBase:
    """Return the knowledge base prepared in `data_dir`, building it first unless an identical one is there.

    Raises ValueError when `data_dir` contains anything else: another synthetic knowledge base, or files that
    this function did not finish writing.
    """
    existing = read_description(data_dir)
    if existing is not None:
        expected = {"chunks": chunks, "chunks_per_document": chunks_per_document, "seed": seed,
                    "base_documents": base_documents, "embedder": embedder.name}
        found = {name: getattr(existing, name) for name in expected}
        if found != expected:
            raise ValueError(f"{data_dir} already contains a synthetic knowledge base built with {found}, not "
                             f"{expected}. Pass another directory or delete this one.")
        logger.info("reusing the synthetic knowledge base in %s (%d chunks)", data_dir, existing.chunks)
        return existing
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ValueError(f"{data_dir} is not empty and contains no finished synthetic knowledge base "
                         f"({DESCRIPTION_FILE} is missing). Pass an empty or missing directory.")

    started = time.perf_counter()
    settings = Settings(data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(settings.catalog_location, replica=settings.worker_name)
    try:
        base_vectors = scifact_chunk_embeddings(corpus_path, base_documents, embedder,
                                                chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap)
        logger.info("embedded %d SciFact chunks as base vectors", len(base_vectors))
        tenant, _ = catalog.create_tenant(name=TENANT)
        knowledge_base = catalog.create_knowledge_base(tenant_id=tenant.id, name=KNOWLEDGE_BASE,
                                                       chunk_size=settings.chunk_size,
                                                       chunk_overlap=settings.chunk_overlap)
        corpus = SyntheticCorpus(corpus_path, base_vectors, seed=seed)
        store_chunks(catalog, knowledge_base.id, corpus, chunks, chunks_per_document)
        build_indices(catalog, settings, knowledge_base.id, embedder)
    finally:
        catalog.close()

    description = SyntheticKnowledgeBase(
        chunks=chunks, chunks_per_document=chunks_per_document, seed=seed, base_documents=base_documents,
        base_vectors=len(base_vectors), embedder=embedder.name, tenant_id=tenant.id,
        knowledge_base_id=knowledge_base.id, knowledge_base=KNOWLEDGE_BASE,
        build_s=round(time.perf_counter() - started, 1))
    (data_dir / DESCRIPTION_FILE).write_text(json.dumps(asdict(description), indent=2) + "\n")
    logger.info("synthetic knowledge base of %d chunks built in %.0f s", chunks, description.build_s)
    return description


def store_chunks(catalog: Catalog, knowledge_base_id: str, corpus: SyntheticCorpus, chunks: int,
                 chunks_per_document: int) -> None:
    """Store `chunks` synthetic chunks in documents of `chunks_per_document`, the last one possibly shorter."""
    started = time.perf_counter()
    stored = 0
    document_number = 0
    while stored < chunks:
        count = min(BATCH_CHUNKS, chunks - stored)
        texts = corpus.texts(count)
        vectors = corpus.vectors(count)
        for start in range(0, count, chunks_per_document):
            document_texts = texts[start:start + chunks_per_document]
            new_chunks = [NewChunk(position=position, text=text, metadata={}, embedding=vectors[start + position])
                          for position, text in enumerate(document_texts)]
            content_hash = hashlib.sha256("\n".join(document_texts).encode("utf-8")).hexdigest()
            catalog.replace_document(knowledge_base_id=knowledge_base_id,
                                     document_id=f"synthetic-{document_number:07d}", title="", source="synthetic",
                                     content_hash=content_hash, metadata={}, chunks=new_chunks)
            document_number += 1
        stored += count
        logger.info("stored %d of %d chunks (%.0f s)", stored, chunks, time.perf_counter() - started)


def build_indices(catalog: Catalog, settings: Settings, knowledge_base_id: str, embedder: Embedder) -> None:
    """Open the knowledge base as the service does, which builds its indices from the catalog, and save them."""
    started = time.perf_counter()
    registry = IndexRegistry(catalog=catalog, root=settings.data_dir / "kb", dimension=embedder.dimension,
                             embedder_name=embedder.name,
                             dense_approximate_threshold=settings.dense_approximate_threshold, graph_index=False)
    index = registry.get(knowledge_base_id)
    dense = index.retrievers["dense"]
    logger.info("indices built from the catalog in %.0f s: %d chunks, dense index %s",
                time.perf_counter() - started, len(index), type(dense._index).__name__)
    index.save()
    logger.info("index snapshot saved (%.0f s in all)", time.perf_counter() - started)
    del index, dense, registry
    gc.collect()


def create_api_key(data_dir: Path, description: SyntheticKnowledgeBase) -> str:
    """Create a read-only API key for the knowledge base's tenant, in its catalog."""
    settings = Settings(data_dir=data_dir)
    catalog = Catalog(settings.catalog_location, replica=settings.worker_name)
    try:
        _, key = catalog.create_api_key(tenant_id=description.tenant_id, role="read-only")
    finally:
        catalog.close()
    return key
