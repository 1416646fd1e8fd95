"""Local search: link the query to entities, spread relevance over the graph by personalized PageRank, and score
chunks by the PageRank mass that reaches them from the entities they mention.

This follows HippoRAG (Gutierrez et al., 2024) with chunks as graph nodes, as in HippoRAG 2.
"""

import math
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from retrievers.graph.extraction import EntityExtractor
from retrievers.graph.store import GraphStore

# HippoRAG's retrieval configuration defaults to a damping factor of 0.5 (arXiv 2405.14831). Half the mass
# returns to the seeds at each step, so the walk stays close to the query's entities.
DAMPING = 0.5
MAX_ITERATIONS = 50
TOLERANCE = 1e-6
# Weight of a chunk-mention edge relative to one sentence co-occurrence.
MENTION_WEIGHT = 1.0
# A query mention with no exact match links to at most this many entities whose names contain all its words.
MAX_PARTIAL_LINKS = 5


@dataclass(frozen=True)
class Seed:
    entity: int
    weight: float


class WalkMatrix:
    """The column-stochastic transition matrix over entity and chunk nodes, built from one store version.

    Nodes 0..E-1 are entities and E..E+C-1 are chunks. Entities connect to each other by relation weight and to
    the chunks that mention them by mention count, so the walk follows both sentence and chunk co-occurrence.
    """

    def __init__(self, store: GraphStore) -> None:
        self.version = store.version
        self.entities = np.array(sorted(store.entity_chunks), dtype=np.int64)
        self.rowids = np.array(sorted(store.chunks), dtype=np.int64)
        entity_index = {int(entity): i for i, entity in enumerate(self.entities)}
        chunk_index = {int(rowid): len(self.entities) + i for i, rowid in enumerate(self.rowids)}
        size = len(self.entities) + len(self.rowids)

        sources, targets, weights = [], [], []
        for first, second, weight in store.graph.edges(data="weight"):
            sources.append(entity_index[first])
            targets.append(entity_index[second])
            weights.append(float(weight))
        for entity, mentions in store.entity_chunks.items():
            for rowid, count in mentions.items():
                sources.append(entity_index[entity])
                targets.append(chunk_index[rowid])
                weights.append(MENTION_WEIGHT * count)
        adjacency = sparse.coo_matrix((weights, (sources, targets)), shape=(size, size)).tocsr()
        adjacency = adjacency + adjacency.T
        out_weight = np.asarray(adjacency.sum(axis=0)).ravel()
        # An isolated node has no out-weight, so its column is divided by 1 and stays empty instead of NaN.
        self.transition = (adjacency @ sparse.diags(1.0 / np.where(out_weight > 0, out_weight, 1.0))).tocsr()
        self.entity_index = entity_index

    def personalized_pagerank(self, seeds: list[Seed]) -> np.ndarray:
        """Return the stationary distribution of a walk that restarts at the seeds with probability 1 - DAMPING."""
        size = self.transition.shape[0]
        restart = np.zeros(size)
        for seed in seeds:
            restart[self.entity_index[seed.entity]] += seed.weight
        restart /= restart.sum()
        rank = restart.copy()
        for _ in range(MAX_ITERATIONS):
            updated = DAMPING * (self.transition @ rank) + (1.0 - DAMPING) * restart
            # Mass that reaches a node with no edges is returned to the seeds, so the total stays 1.
            updated += (1.0 - updated.sum()) * restart
            if np.abs(updated - rank).sum() < TOLERANCE:
                return updated
            rank = updated
        return rank


def link_query(query: str, store: GraphStore, extractor: EntityExtractor,
               word_index: dict[str, set[int]]) -> list[Seed]:
    """Link the query's mentions to entities: exact normalised match, else entities that contain all its words.

    Each seed is weighted by its entity's inverse document frequency, so a rare entity steers the walk more than
    a common one (HippoRAG's node specificity).
    """
    chunk_count = max(len(store), 1)
    weights: dict[int, float] = {}
    for mention in extractor.mentions(query, known=store.entity_ids.__contains__):
        entity = store.entity_ids.get(mention.key)
        if entity is not None:
            candidates = [entity]
        else:
            candidates = _partial_matches(mention.key, word_index, store)
        for candidate in candidates:
            frequency = store.document_frequency(candidate)
            weight = math.log1p(chunk_count / max(frequency, 1))
            weights[candidate] = max(weights.get(candidate, 0.0), weight / len(candidates))
    return [Seed(entity=entity, weight=weight) for entity, weight in sorted(weights.items())]


def _partial_matches(key: str, word_index: dict[str, set[int]], store: GraphStore) -> list[int]:
    """Entities whose names contain every word of `key`, shortest names first."""
    postings = [word_index.get(word) for word in key.split(" ")]
    if not postings or any(posting is None for posting in postings):
        return []
    matches = set.intersection(*postings)
    return sorted(matches, key=lambda entity: (len(store.keys[entity]), entity))[:MAX_PARTIAL_LINKS]


def build_word_index(store: GraphStore) -> dict[str, set[int]]:
    index: dict[str, set[int]] = {}
    for key, entity in store.entity_ids.items():
        for word in key.split(" "):
            index.setdefault(word, set()).add(entity)
    return index


def score_chunks(matrix: WalkMatrix, rank: np.ndarray) -> np.ndarray:
    """Score each chunk by the PageRank mass of its own node.

    A chunk node receives mass only from the entities it mentions, each passing on its mass in proportion to its
    mention count over all its edges, so a very common entity gives each of its many chunks only a little. On
    2WikiMultiHopQA and MuSiQue this ranked gold passages higher than summing the entities' idf-weighted mass.
    """
    return rank[len(matrix.entities):]
