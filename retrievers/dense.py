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
                 probe_fraction: float = DEFAULT_PROBE_FRACTION) -> None:
        if approximate_threshold < 1:
            raise ValueError(f"approximate_threshold must be at least 1, got {approximate_threshold}")
        if not 0 < probe_fraction <= 1:
            raise ValueError(f"probe_fraction must be in (0, 1], got {probe_fraction}")
        self.dimension = dimension
        self.approximate_threshold = approximate_threshold
        self.probe_fraction = probe_fraction
        self._index: faiss.Index = self._flat_index()
        self._trained_for = 0

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
        self._index.remove_ids(faiss.IDSelectorBatch(rowids))
        self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), rowids)
        self._fit_index_to_size()

    def delete(self, rowids: list[int]) -> None:
        # Both index types remove the ids from their storage at once, so a deleted chunk is never returned.
        if rowids:
            faiss.omp_set_num_threads(BULK_THREADS)
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(rowids, dtype=np.int64)))
            self._fit_index_to_size()

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
        self._fit_index_to_size()

    def _flat_index(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.dimension))

    def _fit_index_to_size(self) -> None:
        """Switch between exact and IVF search as the index grows or shrinks, and retrain an outgrown IVF."""
        count = int(self._index.ntotal)
        if not self.is_approximate:
            if count > self.approximate_threshold:
                self._rebuild(approximate=True)
        elif count < self.approximate_threshold // 2:
            # Half the threshold, so that adds and deletes around the threshold do not rebuild each time.
            self._rebuild(approximate=False)
        elif count > RETRAIN_GROWTH * self._trained_for:
            self._rebuild(approximate=True)

    def _rebuild(self, *, approximate: bool) -> None:
        # NOTE: this runs inside add() or delete(), under the knowledge base's write lock, so searches wait for
        # it. Building 1 million vectors in batches of 50,000, with two such rebuilds, took 113 s on two cores.
        started = time.perf_counter()
        rowids, vectors = self._stored_vectors()
        if approximate:
            index = self._train_ivf(vectors)
        else:
            index = self._flat_index()
        index.add_with_ids(vectors, rowids)
        self._index = index
        self._trained_for = len(rowids) if approximate else 0
        if approximate:
            self._set_probes()
        logger.info("dense index rebuilt", extra={"kind": type(index).__name__, "vectors": len(rowids),
                                                  "ms": round(1000 * (time.perf_counter() - started), 1)})

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
        """Return every stored rowid and vector, read from the index itself."""
        if not self.is_approximate:
            flat = faiss.downcast_index(self._index.index)
            count = int(flat.ntotal)
            vectors = faiss.rev_swig_ptr(flat.get_xb(), count * self.dimension).reshape(count, self.dimension)
            # A view, not a copy: _rebuild reads it before the flat index it points into is released.
            return faiss.vector_to_array(self._index.id_map).astype(np.int64), vectors
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
