import numpy as np
import pytest

from retrievers.base import IndexedChunk
from retrievers.dense import DenseRetriever

DIMENSION = 16


def unit_vectors(count: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def chunks(rowids: range, vectors: np.ndarray) -> list[IndexedChunk]:
    return [IndexedChunk(rowid=rowid, text="", embedding=vector) for rowid, vector in zip(rowids, vectors)]


def exact_top(vectors: np.ndarray, rowids: np.ndarray, query: np.ndarray, k: int) -> list[int]:
    scores = vectors @ query
    return [int(rowids[i]) for i in np.argsort(-scores, kind="stable")[:k]]


class TestDenseRetrieverIndexChoice:
    def test_small_index_stays_exact(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=100)
        retriever.add(chunks(range(100), unit_vectors(100)))
        assert not retriever.is_approximate
        assert len(retriever) == 100

    def test_crossing_threshold_switches_to_ivf(self):
        vectors = unit_vectors(400)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, probe_fraction=1.0)
        retriever.add(chunks(range(200), vectors[:200]))
        retriever.add(chunks(range(200, 400), vectors[200:]))
        assert retriever.is_approximate
        assert len(retriever) == 400

        # Probing every bucket makes IVF exact, so the ranking must match brute force.
        query = vectors[7]
        hits = retriever.search("", query, 10)
        assert [hit.rowid for hit in hits] == exact_top(vectors, np.arange(400), query, 10)
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_ivf_recall_with_default_probes(self):
        # Clustered like real embeddings: uniform random vectors have no structure for buckets to follow.
        centers = unit_vectors(100, seed=1)
        vectors = np.repeat(centers, 30, axis=0) + 0.3 * unit_vectors(3000, seed=4)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=1000)
        retriever.add(chunks(range(3000), vectors))
        assert retriever.is_approximate
        queries = vectors[::60] + 0.1 * unit_vectors(50, seed=2)
        found = 0
        for query in queries:
            expected = set(exact_top(vectors, np.arange(3000), query, 10))
            found += len(expected & {hit.rowid for hit in retriever.search("", query, 10)})
        assert found / (10 * len(queries)) >= 0.95

    def test_shrinking_below_half_threshold_returns_to_flat(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300)
        retriever.add(chunks(range(400), unit_vectors(400)))
        assert retriever.is_approximate
        retriever.delete(list(range(300)))
        assert not retriever.is_approximate
        assert len(retriever) == 100
        assert {hit.rowid for hit in retriever.search("", unit_vectors(1, seed=9)[0], 200)} == set(range(300, 400))


class TestDenseRetrieverApproximateDeletes:
    def test_deleted_chunk_never_returned(self):
        vectors = unit_vectors(500)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, probe_fraction=1.0)
        retriever.add(chunks(range(500), vectors))
        assert retriever.is_approximate

        retriever.delete([7, 8, 9])
        for rowid in (7, 8, 9):
            returned = {hit.rowid for hit in retriever.search("", vectors[rowid], 500)}
            assert rowid not in returned
            assert len(returned) == 497
        assert len(retriever) == 497

    def test_readding_replaces_vector(self):
        vectors = unit_vectors(500)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, probe_fraction=1.0)
        retriever.add(chunks(range(500), vectors))
        retriever.add(chunks(range(3, 4), -vectors[3:4]))
        assert len(retriever) == 500
        hits = retriever.search("", -vectors[3], 1)
        assert hits[0].rowid == 3
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

    def test_retrains_after_growth(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=200)
        retriever.add(chunks(range(250), unit_vectors(250)))
        lists_before = retriever._index.nlist
        retriever.add(chunks(range(250, 1250), unit_vectors(1000, seed=3)))
        assert retriever._index.nlist > lists_before
        assert len(retriever) == 1250


class TestDenseRetrieverPersistence:
    @pytest.mark.parametrize("count", [100, 500])
    def test_save_load_roundtrip(self, tmp_path, count):
        vectors = unit_vectors(count)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300)
        retriever.add(chunks(range(count), vectors))
        retriever.delete([0])
        query = vectors[5]
        expected = retriever.search("", query, 10)
        retriever.save(tmp_path)

        loaded = DenseRetriever(DIMENSION, approximate_threshold=300)
        loaded.load(tmp_path)
        assert loaded.is_approximate == (count > 300)
        assert len(loaded) == count - 1
        assert loaded.search("", query, 10) == expected
        assert 0 not in {hit.rowid for hit in loaded.search("", vectors[0], count)}

    def test_load_rejects_other_dimension(self, tmp_path):
        retriever = DenseRetriever(DIMENSION)
        retriever.add(chunks(range(3), unit_vectors(3)))
        retriever.save(tmp_path)
        with pytest.raises(ValueError, match="has dimension 16, the embedder has 8"):
            DenseRetriever(8).load(tmp_path)


class TestDenseRetrieverValidation:
    def test_rejects_wrong_dimension(self):
        with pytest.raises(ValueError, match="embedding dimension 8 does not match the index's 16"):
            DenseRetriever(DIMENSION).add(chunks(range(1), np.ones((1, 8), dtype=np.float32)))

    def test_rejects_invalid_probe_fraction(self):
        with pytest.raises(ValueError, match=r"probe_fraction must be in \(0, 1\], got 0"):
            DenseRetriever(DIMENSION, probe_fraction=0)


class TestDenseRetrieverRebuildBesideLiveIndex:
    def test_rebuild_replays_concurrent_writes(self):
        vectors = unit_vectors(460)
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, probe_fraction=1.0, rebuild_inline=False)
        retriever.add(chunks(range(400), vectors[:400]))
        assert not retriever.is_approximate
        assert retriever.needs_rebuild()

        rebuild = retriever.begin_rebuild()
        retriever.add(chunks(range(400, 460), vectors[400:]))
        retriever.delete([7])
        retriever.add(chunks(range(3, 4), -vectors[3:4]))
        rebuild.build()
        # Until the swap, searches read the live exact index, which already has every write.
        assert not retriever.is_approximate
        assert retriever.search("", vectors[420], 1)[0].rowid == 420
        retriever.finish_rebuild(rebuild)

        assert retriever.is_approximate
        assert len(retriever) == 459
        assert 7 not in {hit.rowid for hit in retriever.search("", vectors[7], 459)}
        hits = retriever.search("", -vectors[3], 1)
        assert hits[0].rowid == 3
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)
        expected = np.delete(np.arange(460), 7)
        live_vectors = vectors[expected].copy()
        live_vectors[3] = -vectors[3]
        query = vectors[450]
        assert [hit.rowid for hit in retriever.search("", query, 10)] == exact_top(live_vectors, expected, query, 10)

    def test_begin_rebuild_only_when_needed(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, rebuild_inline=False)
        retriever.add(chunks(range(300), unit_vectors(300)))
        assert retriever.begin_rebuild() is None
        retriever.add(chunks(range(300, 301), unit_vectors(1, seed=5)))
        rebuild = retriever.begin_rebuild()
        assert rebuild is not None
        assert retriever.begin_rebuild() is None

    def test_cancelled_rebuild_keeps_live_index(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, rebuild_inline=False)
        retriever.add(chunks(range(400), unit_vectors(400)))
        rebuild = retriever.begin_rebuild()
        retriever.cancel_rebuild(rebuild)
        assert not retriever.is_approximate
        assert len(retriever) == 400
        assert retriever._journal is None
        assert retriever.begin_rebuild() is not None

    def test_finish_unbuilt_rebuild_raises(self):
        retriever = DenseRetriever(DIMENSION, approximate_threshold=300, rebuild_inline=False)
        retriever.add(chunks(range(400), unit_vectors(400)))
        rebuild = retriever.begin_rebuild()
        with pytest.raises(RuntimeError, match="call rebuild.build\\(\\) first"):
            retriever.finish_rebuild(rebuild)
