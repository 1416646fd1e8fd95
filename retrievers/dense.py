"""Dense retrieval: inner product over L2-normalised embeddings in a FAISS index keyed by chunk rowid."""

import os
from pathlib import Path

import faiss
import numpy as np

from retrievers.base import Hit, IndexedChunk


class DenseRetriever:
    name = "dense"

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(self, chunks: list[IndexedChunk]) -> None:
        if not chunks:
            return
        rowids = np.array([chunk.rowid for chunk in chunks], dtype=np.int64)
        self._index.remove_ids(faiss.IDSelectorBatch(rowids))
        vectors = np.vstack([chunk.embedding for chunk in chunks]).astype(np.float32, copy=False)
        if vectors.shape[1] != self.dimension:
            raise ValueError(f"embedding dimension {vectors.shape[1]} does not match the index's {self.dimension}")
        self._index.add_with_ids(np.ascontiguousarray(vectors), rowids)

    def delete(self, rowids: list[int]) -> None:
        if rowids:
            self._index.remove_ids(faiss.IDSelectorBatch(np.array(rowids, dtype=np.int64)))

    def search(self, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        if query_embedding is None:
            raise ValueError("dense search needs the query's embedding")
        if self._index.ntotal == 0:
            return []
        query_matrix = np.ascontiguousarray(query_embedding.reshape(1, -1), dtype=np.float32)
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
