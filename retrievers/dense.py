"""Dense retrieval: inner product over L2-normalised embeddings in a FAISS index keyed by chunk rowid.

Small indices are exact (`IndexFlatIP`). Past `approximate_threshold` vectors the index becomes an inverted
file (`IndexIVFFlat`): vectors are bucketed by their nearest k-means centroid and a query scans only the
`nprobe` nearest buckets. IVF was chosen over HNSW for two reasons. FAISS removes ids from an IVF index
exactly and in place, so a deleted chunk is gone at once with no tombstones. Its memory stays at one float32
vector and one id per chunk, without HNSW's graph links. Scores of returned hits are exact inner products.
Only recall is approximate, because a true neighbour in an unprobed bucket is missed.
"""

import logging
import math
import os
import time
from pathlib import Path

import faiss
import numpy as np

from retrievers.base import Hit, IndexedChunk

logger = logging.getLogger(__name__)

# Exact search reads every vector per query: at 100,000 MiniLM vectors (384 dimensions, 150 MB) that is
# about 10-20 ms on two cores, which is where an approximate index starts to pay for its training time.
DEFAULT_APPROXIMATE_THRESHOLD = 100_000
# A rule of thumb from the FAISS wiki: about 4 * sqrt(n) buckets, trained on 30-256 points per bucket.
LISTS_PER_SQRT_VECTORS = 4
TRAINING_POINTS_PER_LIST = 50
KMEANS_ITERATIONS = 10
# Retrain once the index contains this many times the vectors it was trained for, so buckets stay balanced.
RETRAIN_GROWTH = 4
# Share of buckets scanned per query. On 1 million vectors made by perturbing real MiniLM embeddings of SciFact
# chunks, 1/16 gave recall@10 of 1.00 against exact search for 200 SciFact queries (benchmarks/scale.py).
# Those vectors are more clustered than a real corpus, so treat that recall as an upper estimate.
DEFAULT_PROBE_FRACTION = 1 / 16
MIN_PROBES = 8
# FAISS splits one query's scan over OpenMP threads. On a few cores that are already busy with other requests
# and with torch's own OpenMP pool, that made one exact search over 20,000 vectors about 30 times slower than
# a single thread (benchmarks/scale.py, 2 cores). The setting is per calling thread in OpenMP, so training and
# bulk adds in other threads keep every core.
SEARCH_THREADS = 1
BULK_THREADS = faiss.omp_get_max_threads()


class DenseRetriever:
    name = "dense"

    def __init__(self, dimension: int, *, approximate_threshold: int = DEFAULT_APPROXIMATE_THRESHOLD,
                 probe_fraction: float = DEFAULT_PROBE_FRACTION, rebuild_inline: bool = True) -> None:
        """`rebuild_inline` False leaves rebuilds to the owner, which runs begin/build/finish_rebuild itself."""
        if approximate_threshold < 1:
            raise ValueError(f"approximate_threshold must be at least 1, got {approximate_threshold}")
        if not 0 < probe_fraction <= 1:
            raise ValueError(f"probe_fraction must be in (0, 1], got {probe_fraction}")
        self.dimension = dimension
        self.approximate_threshold = approximate_threshold
        self.probe_fraction = probe_fraction
        self.rebuild_inline = rebuild_inline
        self._index: faiss.Index = self._flat_index()
        self._trained_for = 0
        # While a rebuild copies and indexes the vectors, adds and deletes are applied to the live index and
        # also recorded here, so that finish_rebuild can replay them onto the new one.
        self._journal: list[tuple[np.ndarray, np.ndarray | None]] | None = None

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_approximate(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    def add(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        rowids = np.array([chunk.rowid for chunk in chunks], dtype=np.int64)
        vectors = np.vstack([chunk.embedding for chunk in chunks]).astype(np.float32, copy=False)
        self.add_vectors(rowids, vectors)

    def add_vectors(self, rowids: np.ndarray, vectors: np.ndarray) -> None:
        """Add or replace the vectors of `rowids`; one row of `vectors` per rowid."""
        if vectors.ndim != 2 or vectors.shape[1] != self.dimension:
            raise ValueError(f"embedding dimension {vectors.shape[-1]} does not match the index's {self.dimension}")
        if len(rowids) != len(vectors):
            raise ValueError(f"got {len(rowids)} rowids for {len(vectors)} vectors")
        rowids = np.ascontiguousarray(rowids, dtype=np.int64)
        # A thread that searched before is down to one OpenMP thread; bucket assignment and k-means use them all.
        faiss.omp_set_num_threads(BULK_THREADS)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self._index.remove_ids(faiss.IDSelectorBatch(rowids))
        self._index.add_with_ids(vectors, rowids)
        if self._journal is not None:
            self._journal.append((rowids.copy(), vectors.copy()))
        if self.rebuild_inline:
            self.rebuild_if_needed()

    def delete(self, rowids: list[int]) -> None:
        # Both index types remove the ids from their storage at once, so a deleted chunk is never returned.
        if rowids:
            faiss.omp_set_num_threads(BULK_THREADS)
            removed = np.array(rowids, dtype=np.int64)
            self._index.remove_ids(faiss.IDSelectorBatch(removed))
            if self._journal is not None:
                self._journal.append((removed, None))
            if self.rebuild_inline:
                self.rebuild_if_needed()

    def search(self, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        if query_embedding is None:
            raise ValueError("dense search needs the query's embedding")
        if self._index.ntotal == 0:
            return []
        query_matrix = np.ascontiguousarray(query_embedding.reshape(1, -1), dtype=np.float32)
        faiss.omp_set_num_threads(SEARCH_THREADS)
        scores, rowids = self._index.search(query_matrix, min(top_k, int(self._index.ntotal)))
        return [Hit(rowid=int(rowid), score=float(score), source=self.name)
                for score, rowid in zip(scores[0], rowids[0]) if rowid != -1]

    def save(self, directory: Path) -> None:
        """Write the index to a temporary file, fsync it, then rename it into place."""
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / "dense.faiss.tmp"
        faiss.write_index(self._index, str(temporary))
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, directory / "dense.faiss")

    def load(self, directory: Path) -> None:
        index = faiss.read_index(str(directory / "dense.faiss"))
        if index.d != self.dimension:
            raise ValueError(f"dense index in {directory} has dimension {index.d}, the embedder has {self.dimension}")
        self._index = index
        if isinstance(index, faiss.IndexIVF):
            self._trained_for = int(index.ntotal)
            self._set_probes()
        if self.rebuild_inline:
            self.rebuild_if_needed()

    def _flat_index(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    def needs_rebuild(self) -> bool:
        return self._wanted_kind() is not None

    def _wanted_kind(self) -> str | None:
        """Return "approximate" or "exact" when the index should be rebuilt as that kind, else None."""
        count = int(self._index.ntotal)
        if not self.is_approximate:
            return "approximate" if count > self.approximate_threshold else None
        if count < self.approximate_threshold // 2:
            # Half the threshold, so that adds and deletes around the threshold do not rebuild each time.
            return "exact"
        if count > RETRAIN_GROWTH * self._trained_for:
            return "approximate"
        return None

    def rebuild_if_needed(self) -> bool:
        """Switch between exact and IVF search as the index grows or shrinks, or retrain an outgrown IVF, at once."""
        rebuild = self.begin_rebuild()
        if rebuild is None:
            return False
        try:
            rebuild.build()
        except BaseException:
            self.cancel_rebuild(rebuild)
            raise
        self.finish_rebuild(rebuild)
        return True

    def begin_rebuild(self) -> "IndexRebuild | None":
        """Copy the stored vectors when the index needs rebuilding, and journal writes from now on.

        The caller must keep writes out while this runs (searches may go on). The returned rebuild's `build()`
        touches nothing shared, so it may run with no lock held while searches and writes use the live index.
        Returns None when no rebuild is needed or one is already under way.
        """
        kind = self._wanted_kind()
        if kind is None or self._journal is not None:
            return None
        rowids, vectors = self._stored_vectors()
        self._journal = []
        return IndexRebuild(self, approximate=kind == "approximate", rowids=rowids, vectors=vectors)

    def finish_rebuild(self, rebuild: "IndexRebuild") -> None:
        """Replay the writes made since begin_rebuild onto the built index and swap it in.

        The caller must keep searches and writes out while this runs; it takes milliseconds.
        """
        if rebuild.index is None:
            raise RuntimeError("finish_rebuild needs a built index; call rebuild.build() first")
        journal, self._journal = self._journal or [], None
        faiss.omp_set_num_threads(BULK_THREADS)
        for rowids, vectors in journal:
            rebuild.index.remove_ids(faiss.IDSelectorBatch(rowids))
            if vectors is not None:
                rebuild.index.add_with_ids(vectors, rowids)
        self._index = rebuild.index
        self._trained_for = len(rebuild.rowids) if rebuild.approximate else 0
        if rebuild.approximate:
            self._set_probes()
        logger.info("dense index rebuilt", extra={"kind": type(self._index).__name__,
                                                  "vectors": int(self._index.ntotal),
                                                  "replayed_writes": len(journal), "ms": rebuild.build_ms})

    def cancel_rebuild(self, rebuild: "IndexRebuild") -> None:
        """Stop journaling after a rebuild failed; the live index is untouched."""
        self._journal = None

    def _train_ivf(self, vectors: np.ndarray) -> faiss.IndexIVFFlat:
        lists = max(1, int(LISTS_PER_SQRT_VECTORS * math.sqrt(len(vectors))))
        quantizer = faiss.IndexFlatIP(self.dimension)
        index = faiss.IndexIVFFlat(quantizer, self.dimension, lists, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = KMEANS_ITERATIONS
        # A fixed seed keeps the training sample, and so the buckets, reproducible.
        sample_size = min(len(vectors), TRAINING_POINTS_PER_LIST * lists)
        sample = vectors[np.sort(np.random.default_rng(0).choice(len(vectors), sample_size, replace=False))]
        index.train(np.ascontiguousarray(sample))
        return index

    def _set_probes(self) -> None:
        index = faiss.extract_index_ivf(self._index)
        index.nprobe = min(index.nlist, max(MIN_PROBES, math.ceil(self.probe_fraction * index.nlist)))

    def _stored_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Return a copy of every stored rowid and vector, read from the index itself."""
        if not self.is_approximate:
            flat = faiss.downcast_index(self._index.index)
            count = int(flat.ntotal)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), count * self.dimension).reshape(count, self.dimension)
            # A copy, not a view: writes during the rebuild may move the flat index's storage.
            return faiss.vector_to_array(self._index.id_map).astype(np.int64), vectors.copy()
        index = faiss.extract_index_ivf(self._index)
        lists = index.invlists
        rowid_parts, vector_parts = [], []
        for list_number in range(index.nlist):
            size = lists.list_size(list_number)
            if size == 0:
                continue
            rowid_parts.append(faiss.rev_swig_ptr(lists.get_ids(list_number), size).copy())
            codes = faiss.rev_swig_ptr(lists.get_codes(list_number), size * lists.code_size)
            vector_parts.append(codes.view(np.float32).reshape(size, self.dimension).copy())
        if not rowid_parts:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dimension), dtype=np.float32)
        return np.concatenate(rowid_parts).astype(np.int64), np.concatenate(vector_parts)


class IndexRebuild:
    """A new index of one kind built from a copy of a DenseRetriever's vectors, away from its lock."""

    def __init__(self, retriever: DenseRetriever, *, approximate: bool, rowids: np.ndarray,
                 vectors: np.ndarray) -> None:
        self.approximate = approximate
        self.rowids = rowids
        self.vectors: np.ndarray | None = vectors
        self.index: faiss.Index | None = None
        self.build_ms = 0.0
        self._retriever = retriever

    def build(self) -> None:
        """Train (for IVF) and fill the new index.

        Slow: adding 1 million vectors in batches of 50,000, which rebuilt the index twice on the way, took 113 s
        on two cores (benchmarks/scale.py).
        """
        started = time.perf_counter()
        # This thread may have searched before and be down to one OpenMP thread; training uses them all.
        faiss.omp_set_num_threads(BULK_THREADS)
        retriever = self._retriever
        index = retriever._train_ivf(self.vectors) if self.approximate else retriever._flat_index()
        index.add_with_ids(self.vectors, self.rowids)
        self.index = index
        self.vectors = None  # the copy is no longer needed; the index holds its own
        self.build_ms = round(1000 * (time.perf_counter() - started), 1)
