"""Types shared by every retriever: the retrievable unit, a scored hit, and the retriever protocol."""

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class IndexedChunk:
    """What an index receives for one chunk: its catalog rowid, the text to index, and its embedding."""

    rowid: int
    text: str
    embedding: np.ndarray
    # Stored beside the vectors by backends that keep their own rows (Milvus); the local indices ignore them.
    document_id: str = ""
    chunk_id: str = ""


@dataclass(frozen=True)
class Hit:
    """One retrieved chunk; `source` names the retriever that produced it."""

    rowid: int
    score: float
    source: str


@runtime_checkable
class Retriever(Protocol):
    """A derived, persistent index over one knowledge base's chunks."""

    name: str

    def add(self, chunks: list[IndexedChunk]) -> None: ...

    def delete(self, rowids: list[int]) -> None: ...

    def search(self, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        """Return at most `top_k` hits, best first."""
        ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path) -> None: ...

    def __len__(self) -> int: ...
