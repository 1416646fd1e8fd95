"""Communities of related entities (Louvain), their extractive summaries, and global search over the summaries.

Only entities mentioned in at least two chunks take part, because an entity seen in one chunk does not make a
theme of the corpus. Leaving those out also shrinks the graph that Louvain partitions several times over.
"""

import json
import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import networkx as nx
import numpy as np

from generation.base import Generator
from retrievers.base import IndexedChunk
from retrievers.bm25 import BM25Retriever
from retrievers.graph.store import GraphStore

logger = logging.getLogger(__name__)

MIN_CHUNKS_PER_ENTITY = 2
MIN_COMMUNITY_SIZE = 3
# Partitions of graphs up to this many entities take well under a second, so they are computed on the caller's
# thread, and larger ones run in the background. networkx 3.6 Louvain took about 30 s for the 18,000 entities and
# 99,000 relations of the SciFact corpus on a shared 2-core machine.
INLINE_MAX_ENTITIES = 2000
# The partition is recomputed once this share of the chunks has been added or deleted since the last one.
REFRESH_CHANGE_SHARE = 0.1
SUMMARY_ENTITIES = 10
SUMMARY_SENTENCES = 3
# Louvain is randomised; a fixed seed makes the same graph give the same communities.
LOUVAIN_SEED = 7
COMMUNITIES_FILE = "graph_communities.json"
SUMMARY_MAX_TOKENS = 160
# Written summaries are kept for this many distinct extractive summaries, the most recently written last.
MAX_WRITTEN_SUMMARIES = 2000
SUMMARY_PROMPT = """You summarise one theme of a document collection. From the entities and sentences given, \
write two or three plain sentences that say what connects these entities. Use only the facts given; do not \
list every entity, and do not add anything else."""


@dataclass(frozen=True)
class Community:
    """One community: its entities, most central first, an extractive summary, and the chunks it quotes."""

    id: int
    entity_ids: list[int]
    entity_names: list[str]
    summary: str
    rowids: list[int]
    summary_kind: str = "extractive"  # or "llm", when a capable generator rewrote the extractive summary


@dataclass(frozen=True)
class CommunityHit:
    community: Community
    score: float


def community_graph(store: GraphStore) -> nx.Graph:
    """Copy the relations among entities mentioned in at least MIN_CHUNKS_PER_ENTITY chunks."""
    entities = [entity for entity, mentions in store.entity_chunks.items()
                if len(mentions) >= MIN_CHUNKS_PER_ENTITY]
    return store.graph.subgraph(entities).copy()


def detect_communities(graph: nx.Graph) -> list[list[int]]:
    """Partition the graph with Louvain; each community is sorted by weighted degree inside it, highest first."""
    if graph.number_of_edges() == 0:
        return []
    partition = nx.community.louvain_communities(graph, weight="weight", seed=LOUVAIN_SEED)
    communities = []
    for members in partition:
        if len(members) < MIN_COMMUNITY_SIZE:
            continue
        degree = dict(graph.subgraph(members).degree(weight="weight"))
        communities.append(sorted(members, key=lambda entity: (-degree[entity], entity)))
    communities.sort(key=lambda members: (-len(members), members[0]))
    return communities


def summarise(community_id: int, members: list[int], store: GraphStore) -> Community | None:
    """Name the community's most central entities and quote the sentences that link most of them."""
    live = [entity for entity in members if entity in store.names]
    if len(live) < MIN_COMMUNITY_SIZE:
        return None
    central = live[:SUMMARY_ENTITIES]
    centrality = {entity: len(central) - position for position, entity in enumerate(central)}

    candidates: dict[str, tuple[float, int]] = {}
    for entity in central:
        for rowid in store.entity_chunks.get(entity, {}):
            for text, entities in store.chunks[rowid].linking_sentences:
                linked = [centrality[other] for other in entities if other in centrality]
                if len(linked) >= 2 and text not in candidates:
                    candidates[text] = (float(sum(linked)), rowid)
    ranked = sorted(candidates.items(), key=lambda item: (-item[1][0], item[1][1], item[0]))[:SUMMARY_SENTENCES]

    names = [store.names[entity] for entity in central]
    summary = "Entities: " + "; ".join(names) + "."
    if ranked:
        summary += "\n" + "\n".join(text for text, _ in ranked)
    rowids = list(dict.fromkeys(rowid for _, (_, rowid) in ranked))
    return Community(id=community_id, entity_ids=live, entity_names=names, summary=summary, rowids=rowids)


def write_summary(generator: Generator, community: Community) -> Community:
    """Have a generator rewrite a community's extractive summary as prose; the extractive one when that fails."""
    messages = [{"role": "system", "content": SUMMARY_PROMPT},
                {"role": "user", "content": community.summary}]
    try:
        text = generator.generate(messages, max_new_tokens=SUMMARY_MAX_TOKENS).strip()
    except Exception as error:  # a failed summary is never fatal: the extractive one stands
        logger.warning("community summary by the generator failed; keeping the extractive one",
                       extra={"community": community.id, "error": str(error)})
        return community
    if not text:
        return community
    return replace(community, summary=text, summary_kind="llm")


class CommunityIndex:
    """The current partition of a store's entities, refreshed after enough change, and the summaries' index.

    Summaries are extractive. With a `writer` (a generator marked capable), global search has the writer rewrite
    the summaries it returns, once per distinct extractive summary; the rewritten ones are then also listed. BM25
    ranks the extractive summaries either way, because they carry the entity names a question uses.
    """

    def __init__(self) -> None:
        self._partition: list[list[int]] | None = None
        self._partition_changes = 0  # chunk changes since the partition was taken
        self._running: threading.Thread | None = None
        self._lock = threading.Lock()
        self._summaries: list[Community] = []
        self._summary_index: BM25Retriever | None = None
        self._summary_key: tuple[int, int] | None = None  # (store version, partition identity) they were built from
        self.writer: Generator | None = None
        self._written: dict[str, Community] = {}  # extractive summary -> the community with its written summary

    @property
    def computing(self) -> bool:
        return self._running is not None and self._running.is_alive()

    def note_changes(self, count: int) -> None:
        """Record `count` chunk changes; the partition is recomputed when communities are next requested.

        Recomputing lazily keeps bulk ingestion from partitioning the graph after every batch.
        """
        self._partition_changes += count

    def is_stale(self, store: GraphStore) -> bool:
        if self._partition is None:
            return len(store) > 0
        return self._partition_changes >= REFRESH_CHANGE_SHARE * max(len(store), 1)

    def refresh(self, store: GraphStore) -> None:
        """Recompute the partition: inline for a small graph, on a background thread for a large one.

        Call under at least the knowledge base's read lock, because it copies the graph.
        """
        with self._lock:
            if self.computing:
                return
            graph = community_graph(store)
            self._partition_changes = 0
            if graph.number_of_nodes() <= INLINE_MAX_ENTITIES:
                self._partition = detect_communities(graph)
                return
            self._running = threading.Thread(target=self._detect_in_background, args=(graph,),
                                             name="graph-communities", daemon=True)
            self._running.start()

    def _detect_in_background(self, graph: nx.Graph) -> None:
        started = time.perf_counter()
        try:
            partition = detect_communities(graph)
        except Exception:  # a failed partition keeps the previous one; the next refresh tries again
            logger.exception("community detection failed", extra={"entities": graph.number_of_nodes()})
            return
        self._partition = partition
        logger.info("communities detected", extra={"entities": graph.number_of_nodes(),
                                                    "communities": len(partition),
                                                    "ms": round(1000 * (time.perf_counter() - started), 1)})

    def communities(self, store: GraphStore) -> list[Community]:
        """Return the summarised communities of the last partition, with the summaries written so far."""
        return [self._rewritten(community) for community in self._extractive(store)]

    def _rewritten(self, community: Community) -> Community:
        written = self._written.get(community.summary)
        return replace(written, id=community.id, rowids=community.rowids) if written is not None else community

    def _write(self, community: Community) -> Community:
        writer = self.writer
        if writer is None or community.summary_kind != "extractive":
            return community
        written = write_summary(writer, community)
        if written.summary_kind != "llm":
            return community  # not kept, so a later search tries again
        with self._lock:
            if len(self._written) >= MAX_WRITTEN_SUMMARIES:
                self._written.pop(next(iter(self._written)))
            self._written[community.summary] = written
        return written

    def _extractive(self, store: GraphStore) -> list[Community]:
        """Return the extractively summarised communities of the last partition; call under at least a read lock."""
        if self.is_stale(store) and not self.computing:
            self.refresh(store)
        partition = self._partition
        if partition is None:
            return []
        key = (store.version, id(partition))
        if self._summary_key != key:
            summaries = [summarise(index, members, store) for index, members in enumerate(partition)]
            summaries = [community for community in summaries if community is not None]
            summary_index = BM25Retriever()
            summary_index.add([IndexedChunk(rowid=community.id, text=community.summary, embedding=np.zeros(0))
                               for community in summaries])
            self._summaries, self._summary_index, self._summary_key = summaries, summary_index, key
        return self._summaries

    def search(self, store: GraphStore, query: str, top_k: int) -> list[CommunityHit]:
        """Rank community summaries by BM25 against the query; the largest communities when no summary matches.

        A broad question ("what are the main themes?") often shares no term with any summary, and the largest
        communities are then the corpus's main themes.
        """
        communities = self._extractive(store)
        if not communities or self._summary_index is None:
            return []
        by_id = {community.id: community for community in communities}
        hits = self._summary_index.search(query, None, top_k)
        if hits:
            return [CommunityHit(community=self._rewritten(by_id[hit.rowid]), score=hit.score) for hit in hits]
        largest = sorted(communities, key=lambda community: (-len(community.entity_ids), community.id))[:top_k]
        return [CommunityHit(community=self._rewritten(community), score=0.0) for community in largest]

    def write_summaries(self, hits: list[CommunityHit]) -> list[CommunityHit]:
        """Have the writer rewrite the extractive summaries among `hits`; no lock needed, and none should be held,
        because each rewrite is a generator call."""
        return [replace(hit, community=self._write(hit.community)) for hit in hits]

    def save(self, directory: Path) -> None:
        """Write the partition, when there is one, to a temporary file, fsync it, then rename it into place."""
        partition = self._partition
        if partition is None:
            return
        temporary = directory / (COMMUNITIES_FILE + ".tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            json.dump({"partition": partition}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / COMMUNITIES_FILE)

    def load(self, directory: Path) -> None:
        """Read a saved partition; without one, the next request for communities computes it."""
        path = directory / COMMUNITIES_FILE
        self._partition = json.loads(path.read_text(encoding="utf-8"))["partition"] if path.exists() else None
        self._partition_changes = 0
        self._summary_key = None
