"""Restarts keep every knowledge base queryable from stored embeddings, without embedding documents again."""

import shutil

from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import BOTH_CATALOGS, MEDICAL_DOCUMENTS, create_tenant, make_settings, upload_ndjson
from storage.catalog import Catalog
from storage.knowledge_base import IndexRegistry
from tests.fakes import FakeEmbedder, FakeGenerator

# The indices are local files either way; on PostgreSQL they catch up from its chunk_log after a restart.
pytestmark = BOTH_CATALOGS


def start(data_dir, database_url, embedder=None) -> TestClient:
    return TestClient(create_app(make_settings(data_dir, database_url), embedder=embedder or FakeEmbedder(),
                                 generator=FakeGenerator()))


def ingest(data_dir, database_url) -> dict:
    with start(data_dir, database_url) as client:
        headers = create_tenant(client)
        client.post("/v1/knowledge-bases", json={"name": "medical"}, headers=headers)
        upload_ndjson(client, headers, "medical", MEDICAL_DOCUMENTS)
    return headers


def search_ids(client: TestClient, headers: dict, query: str, retrievers: list[str]) -> list[str]:
    response = client.post("/v1/knowledge-bases/medical/search",
                           json={"query": query, "retrievers": retrievers}, headers=headers)
    assert response.status_code == 200, response.text
    return [hit["document_id"] for hit in response.json()["hits"]]


class TestRestart:
    def test_restart_serves_from_snapshot_without_embedding_documents(self, data_dir, database_url):
        headers = ingest(data_dir, database_url)
        embedder = FakeEmbedder()
        with start(data_dir, database_url, embedder) as client:
            assert search_ids(client, headers, "statins cholesterol", ["bm25"])[0] == "statins"
            assert search_ids(client, headers, "statins cholesterol", ["dense"])[0] == "statins"
        # One call embedded the dense query; none re-embedded a document.
        assert embedder.calls == 1

    def test_missing_snapshot_is_rebuilt_from_catalog(self, data_dir, database_url):
        headers = ingest(data_dir, database_url)
        for index_dir in (data_dir / "kb").glob("*/index"):
            shutil.rmtree(index_dir)
        embedder = FakeEmbedder()
        with start(data_dir, database_url, embedder) as client:
            assert search_ids(client, headers, "insulin glucose", ["bm25", "dense"])[0] == "insulin"
        # One call embedded the graph's entity names, whose vectors were in the removed folder, and one the
        # query; no chunk was embedded again.
        assert embedder.calls == 2

    def test_corrupt_snapshot_is_rebuilt_from_catalog(self, data_dir, database_url):
        headers = ingest(data_dir, database_url)
        for snapshot in (data_dir / "kb").glob("*/index/*.faiss"):
            snapshot.write_bytes(b"not a faiss index")
        with start(data_dir, database_url) as client:
            assert search_ids(client, headers, "aspirin infarction", ["dense"])[0] == "aspirin"

    def test_changes_after_snapshot_are_replayed(self, data_dir, database_url):
        headers = ingest(data_dir, database_url)
        # The process dies after the catalog committed a delete but before any index saw it.
        catalog = Catalog(make_settings(data_dir, database_url).catalog_location)
        knowledge_base = catalog.all_knowledge_bases()[0]
        removed = catalog.delete_document(knowledge_base_id=knowledge_base.id, document_id="aspirin")
        assert removed

        registry = IndexRegistry(catalog=catalog, root=data_dir / "kb", dimension=FakeEmbedder.dimension,
                                 embedder_name=FakeEmbedder.name)
        index = registry.get(knowledge_base.id)
        assert len(index) == 2
        query_embedding = FakeEmbedder().embed(["aspirin infarction"])[0]
        for retriever in ("bm25", "dense"):
            hits = index.search(retriever=retriever, query="aspirin infarction", query_embedding=query_embedding,
                                top_k=10)
            assert not set(removed) & {hit.rowid for hit in hits}

    def test_one_missing_snapshot_rebuilds_only_that_retriever(self, data_dir, database_url, caplog):
        ingest(data_dir, database_url)
        for snapshot in (data_dir / "kb").glob("*/index/bm25.npz"):
            snapshot.unlink()
        catalog = Catalog(make_settings(data_dir, database_url).catalog_location)
        knowledge_base = catalog.all_knowledge_bases()[0]
        registry = IndexRegistry(catalog=catalog, root=data_dir / "kb", dimension=FakeEmbedder.dimension,
                                 embedder_name=FakeEmbedder.name)
        with caplog.at_level("INFO", logger="storage.knowledge_base"):
            index = registry.get(knowledge_base.id)
        opened = [record for record in caplog.records if record.message == "index opened"]
        assert opened[0].rebuilt == ["bm25"]
        hits = index.search(retriever="bm25", query="statins cholesterol", query_embedding=None, top_k=3)
        assert catalog.get_chunks([hits[0].rowid])[0].document_id == "statins"
