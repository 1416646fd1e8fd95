"""Rerankers: score (query, passage) pairs more precisely than first-stage retrieval, best first."""

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class Reranker(Protocol):
    name: str

    def score(self, query: str, passages: list[str]) -> list[float]:
        """Return one relevance score per passage; higher is more relevant."""
        ...


@runtime_checkable
class RelevanceJudge(Protocol):
    """A generator that can judge relevance, as RankRAG trains its backbone to."""

    def relevance(self, query: str, passages: list[str]) -> list[float]: ...


class LLMReranker:
    """RankRAG-style: the generator's probability that a passage is relevant to the question."""

    name = "llm"

    def __init__(self, generator: RelevanceJudge) -> None:
        self.generator = generator

    def score(self, query: str, passages: list[str]) -> list[float]:
        return self.generator.relevance(query, passages)


class CrossEncoderReranker:
    """Any local sentence-transformers CrossEncoder directory."""

    name = "cross-encoder"

    def __init__(self, path: Path, *, batch_size: int = 16) -> None:
        from sentence_transformers import CrossEncoder

        if not path.is_dir():
            raise FileNotFoundError(f"cross-encoder directory {path} does not exist; set DOMAINRAG_CROSS_ENCODER "
                                    "to a local sentence-transformers CrossEncoder directory")
        self._model = CrossEncoder(str(path), device="cpu", local_files_only=True)
        self.batch_size = batch_size

    def score(self, query: str, passages: list[str]) -> list[float]:
        if not passages:
            return []
        scores = self._model.predict([(query, passage) for passage in passages], batch_size=self.batch_size,
                                     show_progress_bar=False)
        return [float(score) for score in scores]


@dataclass(frozen=True)
class Reranked:
    index: int  # position in the candidate list that was reranked
    score: float


def rerank(reranker: Reranker, query: str, passages: list[str]) -> list[Reranked]:
    """Score every candidate and sort best first; ties keep the first-stage order."""
    scores = reranker.score(query, passages)
    if len(scores) != len(passages):
        raise ValueError(f"reranker {reranker.name} returned {len(scores)} scores for {len(passages)} passages")
    order = sorted(range(len(passages)), key=lambda i: (-scores[i], i))
    return [Reranked(index=i, score=scores[i]) for i in order]
