"""Reciprocal rank fusion of several ranked hit lists."""

from dataclasses import dataclass, field

from retrievers.base import Hit

# The constant from Cormack, Clarke and Buettcher (SIGIR 2009), who found k=60 robust across collections.
RRF_K = 60


@dataclass
class FusedHit:
    rowid: int
    score: float
    ranks: dict[str, int] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)


def reciprocal_rank_fusion(rankings: dict[str, list[Hit]], *, weights: dict[str, float] | None = None,
                           k: int = RRF_K) -> list[FusedHit]:
    """Fuse ranked lists by sum of weight / (k + rank); ranks are 1-based and kept per retriever."""
    fused: dict[int, FusedHit] = {}
    for name, hits in rankings.items():
        weight = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, hit in enumerate(hits, start=1):
            entry = fused.setdefault(hit.rowid, FusedHit(rowid=hit.rowid, score=0.0))
            entry.score += weight / (k + rank)
            entry.ranks[name] = rank
            entry.scores[name] = hit.score
    # Ties break on the best single rank, then rowid, so the order is deterministic.
    return sorted(fused.values(), key=lambda hit: (-hit.score, min(hit.ranks.values()), hit.rowid))
