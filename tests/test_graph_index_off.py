"""DOMAINRAG_GRAPH_INDEX=false keeps bm25 and dense only, and turning it on again rebuilds the graph."""

import json

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from storage.catalog import Catalog, NewChunk
from storage.knowledge_base import MANIFEST, GraphIndexOff, IndexRegistry
from tests.conftest import create_tenant, make_settings, upload_ndjson
from tests.fakes import FakeEmbedder, FakeGenerator

DOCUMENTS = [
    ("film", "Hotel By The Hour is a 1946 film directed by Emil Krause."),
    ("director", "Emil Krause was a film director from Austria."),
    ("album", "Tidal Notes is an album by Velvet Harbour."),
]


@pytest.fixture
def catalog_with_documents(tmp_path):
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    tenant, _ = catalog.create_tenant(name="acme")
    knowledge_base = catalog.create_knowledge_base(tenant_id=tenant.id, name="kb", chunk_size=64, chunk_overlap=8)
    embedder = FakeEmbedder()
    for document_id, text in DOCUMENTS:
        catalog.replace_document(knowledge_base_id=knowledge_base.id, document_id=document_id, title="",
                                 source="test", content_hash=document_id, metadata={},
                                 chunks=[NewChunk(position=0, text=text, metadata={},
                                                  embedding=embedder.embed([text])[0])])
    return catalog, knowledge_base.id


def open_registry(catalog: Catalog, root, *, graph_index: bool) -> IndexRegistry:
    return IndexRegistry(catalog=catalog, root=root, dimension=FakeEmbedder.dimension,
                         embedder_name=FakeEmbedder.name, graph_index=graph_index)


def bm25_documents(index, query: str) -> list[str]:
    hits = index.search(retriever="bm25", query=query, query_embedding=None, top_k=3)
    return [row.document_id for row in index.catalog.get_chunks([hit.rowid for hit in hits])]


class TestIndexWithoutGraph:
    def test_snapshot_leaves_graph_out(self, catalog_with_documents, tmp_path):
        catalog, knowledge_base_id = catalog_with_documents
        registry = open_registry(catalog, tmp_path / "kb", graph_index=False)
        index = registry.get(knowledge_base_id)
        index.save()

        directory = registry.directory(knowledge_base_id)
        manifest = json.loads((directory / MANIFEST).read_text())
        assert manifest["retrievers"] == ["bm25", "dense"]
        assert not (directory / "graph.npz").exists()
        assert bm25_documents(index, "Velvet Harbour album") == ["album"]

    def test_graph_requests_raise(self, catalog_with_documents, tmp_path):
        catalog, knowledge_base_id = catalog_with_documents
        index = open_registry(catalog, tmp_path / "kb", graph_index=False).get(knowledge_base_id)
        with pytest.raises(GraphIndexOff):
            index.search(retriever="graph", query="Emil Krause", query_embedding=None, top_k=3)
        with pytest.raises(GraphIndexOff):
            index.find_entities("Emil Krause", limit=5)
        with pytest.raises(GraphIndexOff):
            index.global_search("films", 3)

    def test_writes_apply_without_graph(self, catalog_with_documents, tmp_path):
        catalog, knowledge_base_id = catalog_with_documents
        index = open_registry(catalog, tmp_path / "kb", graph_index=False).get(knowledge_base_id)
        text = "Northwind Labs makes telescopes."
        catalog.replace_document(knowledge_base_id=knowledge_base_id, document_id="telescopes", title="",
                                 source="test", content_hash="telescopes", metadata={},
                                 chunks=[NewChunk(position=0, text=text, metadata={},
                                                  embedding=FakeEmbedder().embed([text])[0])])
        index.apply_changes()
        assert bm25_documents(index, "telescopes") == ["telescopes"]

    def test_turning_graph_on_rebuilds_it(self, catalog_with_documents, tmp_path):
        catalog, knowledge_base_id = catalog_with_documents
        open_registry(catalog, tmp_path / "kb", graph_index=False).get(knowledge_base_id).save()

        index = open_registry(catalog, tmp_path / "kb", graph_index=True).get(knowledge_base_id)
        hits = index.search(retriever="graph", query="Who is Emil Krause?", query_embedding=None, top_k=3)
        documents = {row.document_id for row in catalog.get_chunks([hit.rowid for hit in hits])}
        assert documents == {"film", "director"}
        # bm25 and dense came from the snapshot and kept it; only the graph was built from the catalog.
        assert len(index.retrievers["dense"]) == len(DOCUMENTS)

    def test_manifest_without_retrievers_covers_all_three(self, catalog_with_documents, tmp_path, monkeypatch):
        catalog, knowledge_base_id = catalog_with_documents
        registry = open_registry(catalog, tmp_path / "kb", graph_index=True)
        registry.get(knowledge_base_id).save()
        manifest_path = registry.directory(knowledge_base_id) / MANIFEST
        manifest = json.loads(manifest_path.read_text())
        del manifest["retrievers"]
        manifest_path.write_text(json.dumps(manifest))

        rebuilt = []
        monkeypatch.setattr("storage.knowledge_base.KnowledgeBaseIndex._rebuild",
                            lambda index, names: rebuilt.append(names))
        open_registry(catalog, tmp_path / "kb", graph_index=True).get(knowledge_base_id)
        assert rebuilt == []


class TestApiWithoutGraph:
    @pytest.fixture
    def client(self, data_dir):
        settings = make_settings(data_dir, graph_index=False)
        with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=FakeGenerator())) as client:
            yield client

    @pytest.fixture
    def headers(self, client):
        headers = create_tenant(client)
        client.post("/v1/knowledge-bases", json={"name": "films"}, headers=headers)
        upload_ndjson(client, headers, "films", [{"id": document_id, "text": text} for document_id, text in DOCUMENTS])
        return headers

    def test_fused_search_works(self, client, headers):
        response = client.post("/v1/knowledge-bases/films/search",
                               json={"query": "Tidal Notes album", "retrievers": ["bm25", "dense"]}, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json()["hits"][0]["document_id"] == "album"

    def test_graph_search_is_422(self, client, headers):
        response = client.post("/v1/knowledge-bases/films/search",
                               json={"query": "Emil Krause", "retrievers": ["bm25", "graph"]}, headers=headers)
        assert response.status_code == 422
        assert "DOMAINRAG_GRAPH_INDEX=false" in response.json()["detail"]

    def test_graph_routes_are_422(self, client, headers):
        entities = client.get("/v1/knowledge-bases/films/graph/entities", params={"q": "Emil"}, headers=headers)
        assert entities.status_code == 422
        communities = client.get("/v1/knowledge-bases/films/graph/communities", headers=headers)
        assert communities.status_code == 422

    def test_global_query_is_422(self, client, headers):
        response = client.post("/v1/knowledge-bases/films/query",
                               json={"query": "What are the themes?", "mode": "global"}, headers=headers)
        assert response.status_code == 422

