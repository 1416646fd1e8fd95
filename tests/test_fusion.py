from retrievers.base import Hit
from retrievers.fusion import corroborates, reciprocal_rank_fusion


def hits(source: str, *rowids: int) -> list[Hit]:
    return [Hit(rowid=rowid, score=1.0 / rank, source=source) for rank, rowid in enumerate(rowids, start=1)]


class TestReciprocalRankFusion:
    def test_scores_and_ranks(self):
        fused = reciprocal_rank_fusion({"bm25": hits("bm25", 1, 2), "dense": hits("dense", 2, 3)})
        assert [hit.rowid for hit in fused] == [2, 1, 3]
        assert fused[0].ranks == {"bm25": 2, "dense": 1}
        assert fused[0].score == 1 / 62 + 1 / 61

    def test_weights_scale_a_retriever(self):
        fused = reciprocal_rank_fusion({"bm25": hits("bm25", 1), "graph": hits("graph", 2)}, weights={"graph": 0.5})
        assert [hit.rowid for hit in fused] == [1, 2]


class TestCorroborates:
    def test_overlap_in_top_three(self):
        assert corroborates(hits("graph", 9, 8, 1), [hits("bm25", 5, 1, 7)])

    def test_overlap_below_top_three_does_not_count(self):
        assert not corroborates(hits("graph", 9, 8, 7, 1), [hits("bm25", 1, 2, 3)])
        assert not corroborates(hits("graph", 1, 8, 7), [hits("bm25", 2, 3, 4, 1)])

    def test_any_other_ranking_counts(self):
        assert corroborates(hits("graph", 4), [hits("bm25", 1, 2, 3), hits("dense", 4)])

    def test_empty_graph_never_corroborates(self):
        assert not corroborates([], [hits("bm25", 1)])
