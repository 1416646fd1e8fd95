"""Embeddings of entity names, so a query phrase with no exact match links to the entities it names differently.

"Krause the director" or "Northwind Laboratories" match no normalised key, but their embeddings lie close to
"Emil Ortwin Krause" and "Northwind Labs". The names are embedded with the knowledge base's own embedder, in
batches, outside the knowledge base's write lock, and saved next to the graph snapshot so that a restart embeds
only the entities added since the last save.

Only entities written as names (capitalised words, acronyms, gene and drug style terms) are embedded, because
only such query phrases are linked by embedding (see `local_search.link_query`). Lower-case noun phrases are
most of a corpus's entities (about 80% of SciFact's 136,100), so embedding them made graph indexing slower than
embedding the chunks themselves, for links that were never made.
"""

import json
import logging
import os
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np

from retrievers.graph.extraction import is_proper_name
from retrievers.graph.store import GraphStore

logger = logging.getLogger(__name__)

VECTORS_FILE = "graph_entity_vectors.npz"
# A query phrase links to an entity whose name embedding has at least this cosine similarity with its own. The
# value comes from pairs of names, not from any benchmark's recall. With all-MiniLM-L6-v2 and 4,000 entity names
# drawn from 2WikiMultiHopQA, MuSiQue and SciFact passages, 99.99% of random pairs of distinct names score below
# 0.66. A name whose first word is cut to an initial scores 0.75 at the median, and the same words reordered score
# above 0.9. A surname alone (median 0.69) is left to the partial word match. `python -m
# benchmarks.entity_names` prints these figures; an embedder with another similarity scale may need another value.
LINK_SIMILARITY = 0.75
# A query phrase links to at most this many entities by name similarity.
MAX_SIMILAR_LINKS = 3
# Names are embedded in batches of this many, shortest first, so a batch pads little.
EMBED_BATCH = 256


class EntityNameIndex:
    """L2-normalised name embeddings of a store's entities, as rows of one float32 matrix.

    Rows of removed entities are zeroed and reused by later additions, so the matrix never holds more rows than
    the most entities the store has had at once.
    """

    def __init__(self, dimension: int, embedder_name: str) -> None:
        self.dimension = dimension
        self.embedder_name = embedder_name
        self._vectors = np.zeros((0, dimension), dtype=np.float32)
        self._entities = np.zeros(0, dtype=np.int64)  # entity id per row, -1 for a free row
        self._keys: list[str | None] = []  # the key each row was embedded for
        self._row: dict[int, int] = {}
        self._free: list[int] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._row)

    def stale(self, store: GraphStore) -> tuple[list[tuple[int, str, str]], list[int]]:
        """Return the (entity, key, name) triples without a vector and the indexed entities the store has lost.

        Only entities whose name is a proper name are indexed. Reads the store, so call it under at least the
        knowledge base's read lock.
        """
        with self._lock:
            missing = []
            for entity, key in store.keys.items():
                if not is_proper_name(store.names[entity]):
                    continue
                row = self._row.get(entity)
                if row is None or self._keys[row] != key:
                    missing.append((entity, key, store.names[entity]))
            gone = [entity for entity, row in self._row.items() if store.keys.get(entity) != self._keys[row]]
        return missing, gone

    def add(self, entities: list[int], keys: list[str], vectors: np.ndarray) -> None:
        with self._lock:
            for entity, key, vector in zip(entities, keys, vectors):
                row = self._row.get(entity)
                if row is None:
                    row = self._take_row()
                    self._row[entity] = row
                self._vectors[row] = vector
                self._entities[row] = entity
                self._keys[row] = key

    def remove(self, entities: list[int]) -> None:
        with self._lock:
            for entity in entities:
                row = self._row.pop(entity, None)
                if row is None:
                    continue
                self._vectors[row] = 0.0
                self._entities[row] = -1
                self._keys[row] = None
                self._free.append(row)

    def _take_row(self) -> int:
        if self._free:
            return self._free.pop()
        row = len(self._keys)
        if row == len(self._vectors):
            # Grow by half again, so a stream of small additions copies the matrix a logarithmic number of times.
            grown = np.zeros((max(64, row + row // 2), self.dimension), dtype=np.float32)
            grown[:row] = self._vectors
            entities = np.full(len(grown), -1, dtype=np.int64)
            entities[:row] = self._entities
            self._vectors, self._entities = grown, entities
        self._keys.append(None)
        return row

    def nearest(self, queries: np.ndarray, *, threshold: float, limit: int) -> list[list[tuple[int, float]]]:
        """For each query vector, the entities whose name similarity is at least `threshold`, best first."""
        with self._lock:
            if not self._row or len(queries) == 0:
                return [[] for _ in range(len(queries))]
            used = len(self._keys)
            similarities = np.asarray(queries, dtype=np.float32) @ self._vectors[:used].T
            entities = self._entities[:used]
        results = []
        for row in similarities:
            candidates = np.flatnonzero(row >= threshold)
            if len(candidates) > limit:
                candidates = candidates[np.argpartition(-row[candidates], limit - 1)[:limit]]
            candidates = candidates[np.lexsort((entities[candidates], -row[candidates]))]
            results.append([(int(entities[i]), float(row[i])) for i in candidates if entities[i] >= 0])
        return results

    def save(self, directory: Path) -> None:
        """Write the vectors to a temporary file, fsync it, then rename it into place."""
        with self._lock:
            rows = sorted(self._row.values())
            entities = self._entities[rows]
            keys = [self._keys[row] for row in rows]
            vectors = self._vectors[rows]
        temporary = directory / (VECTORS_FILE + ".tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, embedder=np.frombuffer(self.embedder_name.encode("utf-8"), dtype=np.uint8),
                     entities=entities,
                     keys=np.frombuffer(json.dumps(keys, ensure_ascii=False).encode("utf-8"), dtype=np.uint8),
                     vectors=vectors)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / VECTORS_FILE)

    def load(self, directory: Path) -> None:
        """Read saved vectors; those of another embedder or dimension are ignored and embedded again."""
        path = directory / VECTORS_FILE
        if not path.exists():
            return
        with np.load(path, allow_pickle=False) as arrays:
            embedder = arrays["embedder"].tobytes().decode("utf-8")
            vectors = arrays["vectors"]
            if embedder != self.embedder_name or vectors.shape[1:] != (self.dimension,):
                logger.info("entity name vectors were made by another embedder; embedding the names again",
                            extra={"saved_embedder": embedder, "embedder": self.embedder_name})
                return
            entities = arrays["entities"].tolist()
            keys = json.loads(arrays["keys"].tobytes().decode("utf-8"))
        self.add(entities, keys, vectors.astype(np.float32, copy=False))


def sync_name_vectors(index: EntityNameIndex, store: GraphStore, embed: Callable[[list[str]], np.ndarray], *,
                      read_lock: Callable[[], AbstractContextManager] | None = None) -> int:
    """Embed the names of entities added since the last sync and drop those of removed ones; return how many.

    Only the comparison with the store runs under `read_lock`; the embedding runs without it, so searches and
    writes proceed meanwhile. An entity removed while its name was being embedded is dropped by the next sync.
    """
    with (read_lock or nullcontext)():
        missing, gone = index.stale(store)
    index.remove(gone)
    missing.sort(key=lambda item: (len(item[2]), item[0]))
    for start in range(0, len(missing), EMBED_BATCH):
        batch = missing[start:start + EMBED_BATCH]
        vectors = embed([name for _, _, name in batch])
        index.add([entity for entity, _, _ in batch], [key for _, key, _ in batch], vectors)
    return len(missing)
