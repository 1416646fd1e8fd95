"""The dense index of a knowledge base is rebuilt beside the live one, so searches never wait for it."""

import threading

import numpy as np
import pytest

from retrievers.dense import IndexRebuild
from storage.catalog import Catalog, NewChunk
from storage.knowledge_base import IndexRegistry

DIMENSION = 16


def add_documents(catalog: Catalog, knowledge_base_id: str, vectors: np.ndarray, first: int) -> None:
    for number, vector in enumerate(vectors, start=first):
        catalog.replace_document(knowledge_base_id=knowledge_base_id, document_id=f"doc-{number}", title="",
                                 source="test", content_hash=f"hash-{number}", metadata={},
                                 chunks=[NewChunk(position=0, text=f"chunk {number}", metadata={}, embedding=vector)])


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(count, DIMENSION)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def knowledge_base(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    tenant, _ = catalog.create_tenant(name="acme")
    created = catalog.create_knowledge_base(tenant_id=tenant.id, name="kb", chunk_size=64, chunk_overlap=8)
    registry = IndexRegistry(catalog=catalog, root=tmp_path / "kb", dimension=DIMENSION, embedder_name="test",
                             dense_approximate_threshold=40)
    return catalog, created.id, registry.get(created.id)


def dense_top(index, query: np.ndarray, top_k: int) -> list[int]:
    return [hit.rowid for hit in index.search(retriever="dense", query="", query_embedding=query, top_k=top_k)]


class TestDenseRebuildOutsideTheLock:
    def test_rebuild_blocks_no_search_or_write(self, knowledge_base, monkeypatch):
        catalog, knowledge_base_id, index = knowledge_base
        vectors = unit_vectors(60, seed=1)
        add_documents(catalog, knowledge_base_id, vectors[:30], first=0)
        index.apply_changes()
        assert not index.retrievers["dense"].is_approximate

        building, release = threading.Event(), threading.Event()
        build = IndexRebuild.build

        def held_build(rebuild):
            building.set()
            assert release.wait(10), "test never released the build"
            build(rebuild)

        monkeypatch.setattr(IndexRebuild, "build", held_build)
        add_documents(catalog, knowledge_base_id, vectors[30:], first=30)
        writer = threading.Thread(target=index.apply_changes)
        writer.start()
        assert building.wait(5)

        # The build is held: a search returns hits from the live exact index, which already has the new chunks.
        found: list[list[int]] = []
        searcher = threading.Thread(target=lambda: found.append(dense_top(index, vectors[45], 1)))
        searcher.start()
        searcher.join(5)
        assert not searcher.is_alive(), "a search waited for the rebuild"
        assert not index.retrievers["dense"].is_approximate
        rowid_45 = found[0][0]
        assert catalog.get_chunks([rowid_45])[0].document_id == "doc-45"

        # Another write goes through too, and reaches the new index once it is swapped in.
        removed = catalog.delete_document(knowledge_base_id=knowledge_base_id, document_id="doc-45")
        deleter = threading.Thread(target=index.apply_changes)
        deleter.start()
        deleter.join(5)
        assert not deleter.is_alive(), "a write waited for the rebuild"

        release.set()
        writer.join(10)
        assert index.retrievers["dense"].is_approximate
        assert len(index) == 59
        assert not set(removed) & set(dense_top(index, vectors[45], 59))

    def test_failed_rebuild_keeps_live_index(self, knowledge_base, monkeypatch, caplog):
        catalog, knowledge_base_id, index = knowledge_base
        vectors = unit_vectors(50, seed=2)

        def failing_build(rebuild):
            raise MemoryError("no room for the new index")

        monkeypatch.setattr(IndexRebuild, "build", failing_build)
        add_documents(catalog, knowledge_base_id, vectors, first=0)
        with caplog.at_level("ERROR", logger="storage.knowledge_base"):
            index.apply_changes()
        assert [record.message for record in caplog.records] == [
            "dense index rebuild failed; searching the current index meanwhile"]
        assert caplog.records[0].error == "MemoryError('no room for the new index')"
        assert not index.retrievers["dense"].is_approximate
        assert len(dense_top(index, vectors[0], 50)) == 50

        monkeypatch.undo()
        add_documents(catalog, knowledge_base_id, unit_vectors(1, seed=3), first=50)
        index.apply_changes()
        assert index.retrievers["dense"].is_approximate
        assert len(index) == 51

    def test_open_past_threshold_builds_ivf(self, tmp_path):
        catalog = Catalog(tmp_path / "catalog.sqlite3")
        tenant, _ = catalog.create_tenant(name="acme")
        created = catalog.create_knowledge_base(tenant_id=tenant.id, name="kb", chunk_size=64, chunk_overlap=8)
        add_documents(catalog, created.id, unit_vectors(50, seed=4), first=0)
        registry = IndexRegistry(catalog=catalog, root=tmp_path / "kb", dimension=DIMENSION, embedder_name="test",
                                 dense_approximate_threshold=40)
        assert registry.get(created.id).retrievers["dense"].is_approximate
