"""The graph retriever: keeps the entity graph of one knowledge base in step with its chunks and searches it."""

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from generation.base import Generator
from retrievers.base import Hit, IndexedChunk
from retrievers.embedders import Embedder
from retrievers.graph.communities import Community, CommunityHit, CommunityIndex
from retrievers.graph.extraction import EntityExtractor, Sentence
from retrievers.graph.linking import LINK_SIMILARITY, EntityNameIndex, sync_name_vectors
from retrievers.graph.llm_extraction import LLMExtractor
from retrievers.graph.local_search import WalkMatrix, link_query, score_chunks
from retrievers.graph.normalisation import normalise_entity
from retrievers.graph.store import GraphStore

logger = logging.getLogger(__name__)

# The walk matrix is built afresh, dropping the nodes of deleted entities and chunks, once they are this share.
MAX_DEAD_SHARE = 0.5


@dataclass(frozen=True)
class EntityNeighbour:
    name: str
    weight: float


@dataclass(frozen=True)
class EntityInfo:
    """One entity for inspection: its name, normalised key, mentions and strongest relations."""

    id: int
    name: str
    key: str
    mention_count: int
    chunk_rowids: list[int]
    neighbours: list[EntityNeighbour]


class GraphRetriever:
    name = "graph"

    def __init__(self, *, extractor: EntityExtractor | None = None, embedder: Embedder | None = None,
                 link_similarity: float = LINK_SIMILARITY) -> None:
        self.extractor = extractor or EntityExtractor()
        self.store = GraphStore()
        self.community_index = CommunityIndex()
        self.embedder = embedder
        self.link_similarity = link_similarity
        self.names = EntityNameIndex(embedder.dimension, embedder.name) if embedder is not None else None
        self.llm_extractor: LLMExtractor | None = None
        # Extractions by the generator made before the write lock was taken: rowid -> (text, sentences).
        self._prepared: dict[int, tuple[str, list[Sentence]]] = {}
        self._matrix: WalkMatrix | None = None
        # Searches run concurrently under the knowledge base's read lock, and this lock serialises the update of
        # the derived walk matrix after a change.
        self._derived_lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.store)

    def use_generator(self, generator: Generator | None) -> None:
        """Extract with `generator` and have it write community summaries (a capable backbone), or stop (None)."""
        if generator is None:
            self.llm_extractor = None
        elif self.llm_extractor is None or self.llm_extractor.generator is not generator:
            self.llm_extractor = LLMExtractor(generator, fallback=self.extractor)
        self.community_index.writer = generator

    def prepare(self, chunks: list[IndexedChunk]) -> None:
        """Run the generator's extraction of chunks about to be added, before the knowledge base's write lock.

        Extraction by a generator takes seconds per chunk, and searches must not wait for it. Rule-based extraction
        is fast and runs in `add`, because it reads the entities already known.
        """
        extractor = self.llm_extractor
        if extractor is None:
            return
        for chunk in chunks:
            sentences = extractor.extract_with_model(chunk.text) if chunk.text.strip() else []
            if sentences is not None:
                self._prepared[chunk.rowid] = (chunk.text, sentences)

    def discard_prepared(self) -> None:
        """Forget prepared extractions that no add used (their chunks were deleted or changed meanwhile)."""
        self._prepared.clear()

    def add(self, chunks: list[IndexedChunk]) -> None:
        """Extract and link the entities of new or changed chunks; the rest of the graph is left as it is."""
        for chunk in chunks:
            self.store.add_chunk(chunk.rowid, self._extract(chunk))
        if chunks:
            self.community_index.note_changes(len(chunks))

    def _extract(self, chunk: IndexedChunk) -> list[Sentence]:
        prepared = self._prepared.pop(chunk.rowid, None)
        if prepared is not None and prepared[0] == chunk.text:
            return prepared[1]
        extractor = self.llm_extractor or self.extractor
        return extractor.extract(chunk.text, known=self._is_entity)

    def _is_entity(self, key: str) -> bool:
        return key in self.store.entity_ids

    def delete(self, rowids: list[int]) -> None:
        present = [rowid for rowid in rowids if rowid in self.store.chunks]
        for rowid in present:
            self.store.delete_chunk(rowid)
        if present:
            self.community_index.note_changes(len(present))

    def sync_names(self, read_lock: Callable[[], AbstractContextManager] | None = None) -> int:
        """Embed the names of new entities and forget removed ones; returns how many names were embedded.

        Call it after writes, outside the knowledge base's write lock, because only the comparison with the store
        takes `read_lock`. Until it runs, new entities link by exact and partial match only.
        """
        if self.names is None or self.embedder is None:
            return 0
        return sync_name_vectors(self.names, self.store, self._embed_names, read_lock=read_lock)

    def _embed_names(self, texts: list[str]) -> np.ndarray:
        """Embed entity names or query phrases alike: both are names, so an asymmetric embedder's query form
        would only move them apart."""
        return self.embedder.embed(texts)  # type: ignore[union-attr]

    def search(self, query: str, query_embedding: np.ndarray | None = None, top_k: int = 10) -> list[Hit]:
        """Return chunks ranked by personalized PageRank from the query's entities; none when no entity links."""
        if not self.store.chunks:
            return []
        matrix = self._derived()
        embed = self._embed_names if self.names is not None else None
        seeds = [seed for seed in link_query(query, self.store, self.extractor, names=self.names, embed=embed,
                                             similarity=self.link_similarity)
                 if seed.entity in matrix.entity_index]
        if not seeds:
            return []

        rank = matrix.personalized_pagerank(seeds)
        scores = score_chunks(matrix, rank)
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > top_k:
            candidates = candidates[np.argpartition(-scores[candidates], top_k - 1)[:top_k]]
        order = candidates[np.lexsort((matrix.rowids[candidates], -scores[candidates]))]
        return [Hit(rowid=int(matrix.rowids[i]), score=float(scores[i]), source=self.name) for i in order]

    def _derived(self) -> WalkMatrix:
        """Return the walk matrix of the current store, updated by the store's logged changes after a write.

        A full build happens on the first search, after a write too large for the change log (bulk ingestion), and
        when most nodes of the matrix belong to deleted entities and chunks.
        """
        with self._derived_lock:
            matrix = self._matrix
            if matrix is not None and matrix.version == self.store.version:
                return matrix
            started = time.perf_counter()
            if matrix is None or matrix.dead_share > MAX_DEAD_SHARE or not matrix.update(self.store):
                matrix = self._matrix = WalkMatrix.build(self.store)
                logger.info("graph walk matrix built", extra={"nodes": matrix.size,
                                                              "ms": round(1000 * (time.perf_counter() - started), 1)})
            return matrix

    def find_entities(self, query: str, *, limit: int = 20, neighbour_limit: int = 10) -> list[EntityInfo]:
        """Return entities whose normalised name contains the normalised query, the most mentioned first."""
        needle = normalise_entity(query)
        if not needle:
            return []
        exact = self.store.entity_ids.get(needle)
        matches = [entity for key, entity in self.store.entity_ids.items() if needle in key and entity != exact]
        matches.sort(key=lambda entity: (-sum(self.store.entity_chunks[entity].values()), entity))
        if exact is not None:
            matches.insert(0, exact)
        return [self.entity_info(entity, neighbour_limit=neighbour_limit) for entity in matches[:limit]]

    def entity_info(self, entity: int, *, neighbour_limit: int = 10) -> EntityInfo:
        mentions = self.store.entity_chunks[entity]
        edges = sorted(self.store.graph[entity].items(), key=lambda item: (-item[1]["weight"], item[0]))
        neighbours = [EntityNeighbour(name=self.store.names[other], weight=float(data["weight"]))
                      for other, data in edges[:neighbour_limit]]
        return EntityInfo(id=entity, name=self.store.names[entity], key=self.store.keys[entity],
                          mention_count=sum(mentions.values()), chunk_rowids=sorted(mentions),
                          neighbours=neighbours)

    def communities(self) -> list[Community]:
        return self.community_index.communities(self.store)

    def global_search(self, query: str, top_k: int) -> list[CommunityHit]:
        """Rank the community summaries for a broad question, best first.

        Summaries that no capable generator has written yet stay extractive until `write_summaries`.
        """
        return self.community_index.search(self.store, query, top_k)

    def write_summaries(self, hits: list[CommunityHit]) -> list[CommunityHit]:
        """Have a capable generator write the summaries of `hits`; call without the knowledge base's lock."""
        return self.community_index.write_summaries(hits)

    @property
    def computing_communities(self) -> bool:
        return self.community_index.computing

    def save(self, directory: Path) -> None:
        self.store.save(directory)
        self.community_index.save(directory)
        if self.names is not None:
            self.names.save(directory)

    def load(self, directory: Path) -> None:
        self.store = GraphStore.read(directory)
        self.community_index.load(directory)
        self._matrix = None
        if self.names is not None and self.embedder is not None:
            self.names = EntityNameIndex(self.embedder.dimension, self.embedder.name)
            self.names.load(directory)
