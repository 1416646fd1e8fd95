import threading

import numpy as np
import pytest

from retrievers import bm25 as bm25_module
from retrievers.base import IndexedChunk
from retrievers.bm25 import BM25Retriever

EMPTY = np.zeros(1, dtype=np.float32)
WORDS = ["aspirin", "statin", "insulin", "heart", "glucose", "kidney", "liver", "lung", "bone", "skin"]


def chunk(rowid: int, text: str) -> IndexedChunk:
    return IndexedChunk(rowid=rowid, text=text, embedding=EMPTY)


def corpus(count: int, seed: int = 0) -> list[IndexedChunk]:
    rng = np.random.default_rng(seed)
    return [chunk(rowid, "common " + " ".join(rng.choice(WORDS, size=8))) for rowid in range(count)]


def ranking(retriever: BM25Retriever, query: str, top_k: int = 1000) -> list[tuple[int, float]]:
    return [(hit.rowid, round(hit.score, 4)) for hit in retriever.search(query, None, top_k)]


@pytest.fixture
def small_segments(monkeypatch):
    """Flush every 16 chunks, so a few hundred chunks exercise segment merges."""
    monkeypatch.setattr(bm25_module, "BUFFER_LIMIT", 16)


class TestBM25Segments:
    def test_merges_match_single_segment(self, small_segments):
        segmented = BM25Retriever()
        for start in range(0, 400, 10):
            segmented.add(corpus(400)[start:start + 10])
            segmented.search("warm", None, 1)
        single = BM25Retriever()
        single.add(corpus(400))

        assert len(segmented._segments) <= bm25_module.MAX_SEGMENTS
        for query in ("aspirin heart", "liver kidney bone", "skin"):
            assert ranking(segmented, query) == ranking(single, query)

    def test_saved_index_matches_live_one(self, small_segments, tmp_path):
        retriever = BM25Retriever()
        retriever.add(corpus(300))
        retriever.delete(list(range(0, 300, 3)))
        expected = ranking(retriever, "aspirin heart")
        retriever.save(tmp_path)

        loaded = BM25Retriever()
        loaded.load(tmp_path)
        assert len(loaded) == 200
        assert {rowid for rowid, _ in ranking(loaded, "aspirin heart")} == {rowid for rowid, _ in expected}


class TestBM25Deletes:
    def test_churned_term_keeps_matching(self, small_segments):
        retriever = BM25Retriever()
        retriever.add(corpus(100))
        # Deleting and re-adding the same chunks leaves deleted postings behind until a purge.
        for _ in range(5):
            retriever.delete(list(range(50)))
            retriever.add(corpus(100)[:50])
            retriever.search("warm", None, 1)

        hits = retriever.search("common", None, 1000)
        assert {hit.rowid for hit in hits} == set(range(100))
        assert all(hit.score > 0 for hit in hits)

    def test_deleted_chunk_never_returned(self, small_segments):
        retriever = BM25Retriever()
        retriever.add(corpus(200))
        retriever.delete([5, 6, 7])
        assert {5, 6, 7}.isdisjoint(hit.rowid for hit in retriever.search("common", None, 1000))
        assert len(retriever) == 197

    def test_all_deleted_returns_nothing(self):
        retriever = BM25Retriever()
        retriever.add(corpus(10))
        retriever.delete(list(range(10)))
        assert retriever.search("common aspirin", None, 10) == []


class TestBM25ConcurrentSearch:
    def test_first_searches_after_add_agree(self, small_segments):
        retriever = BM25Retriever()
        retriever.add(corpus(300))
        reference = BM25Retriever()
        reference.add(corpus(300))
        expected = ranking(reference, "aspirin heart")

        # Eight searches race to flush the buffer and merge segments; each must see a consistent index.
        results: list[list[tuple[int, float]]] = []
        barrier = threading.Barrier(8)

        def search() -> None:
            barrier.wait()
            results.append(ranking(retriever, "aspirin heart"))

        threads = [threading.Thread(target=search) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [expected] * 8
