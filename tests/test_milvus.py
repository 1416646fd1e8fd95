"""The Milvus index backend on milvus-lite: migration, failed writes, restarts, index choice and clean-up.

The API suite runs its ingestion, search, update, delete, alias and tenant-isolation tests on both backends
(BOTH_INDEX_BACKENDS in test_api.py); these are the behaviours only the Milvus backend has.
"""

import hashlib

import numpy as np
import pytest
from fastapi.testclient import TestClient

import retrievers.milvus as milvus
from app.main import create_app
from retrievers.milvus import MilvusCollection, MilvusStore, collection_name
from retrievers.text import Analyzer
from storage.knowledge_base import AlreadyMigrated
from tests.conftest import MEDICAL_DOCUMENTS, create_tenant, make_settings, upload_ndjson
from tests.fakes import FakeEmbedder, FakeGenerator

# Documents made of distinct pseudo-words, so that dense scores rarely tie and top-10 lists compare exactly.
_WORDS = [f"{consonant}{vowel}{ending}" for consonant in "bdfgklmnprstvz" for vowel in "aeiou"
          for ending in ("x", "th", "mor", "lin")]
EXTRA_DOCUMENTS = [
    {"id": f"note-{i}", "title": f"Clinical note {i}",
     "text": " ".join(_WORDS[(i * 37 + j * j * 11) % len(_WORDS)] for j in range(12))}
    for i in range(60)
]
QUERIES = ["aspirin myocardial infarction", "cholesterol statins muscle pain", "insulin glucose"] + [
    " ".join(_WORDS[(i * 53 + j * 7) % len(_WORDS)] for j in range(4)) for i in range(7)]


@pytest.fixture
def milvus_settings(data_dir, milvus_lite_uri):
    return make_settings(data_dir, milvus_uri=milvus_lite_uri)


class ContinuousEmbedder(FakeEmbedder):
    """Sums a pseudo-random Gaussian vector per stemmed term: unlike FakeEmbedder's 0/1 buckets, scores do not
    tie, so that two indices' top-10 lists can be compared item by item."""

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        self.calls += 1
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in self._analyzer.terms(text):
                seed = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")
                vectors[row] += np.random.default_rng(seed).normal(size=self.dimension).astype(np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)


@pytest.fixture
def embedder() -> FakeEmbedder:
    return ContinuousEmbedder()


@pytest.fixture
def milvus_client(milvus_settings, embedder):
    with TestClient(create_app(milvus_settings, embedder=embedder, generator=FakeGenerator())) as test_client:
        yield test_client


def dense_top10(client: TestClient, headers: dict, kb: str) -> dict[str, list[str]]:
    results = {}
    for query in QUERIES:
        response = client.post(f"/v1/knowledge-bases/{kb}/search",
                               json={"query": query, "top_k": 10, "retrievers": ["dense"]}, headers=headers)
        assert response.status_code == 200, response.text
        results[query] = [hit["chunk_id"] for hit in response.json()["hits"]]
    return results


def test_backend_is_a_knowledge_base_setting(milvus_client):
    tenant = create_tenant(milvus_client)
    created = milvus_client.post("/v1/knowledge-bases", json={"name": "m", "backend": "milvus"}, headers=tenant)
    assert created.status_code == 201
    assert created.json()["backend"] == "milvus"
    default = milvus_client.post("/v1/knowledge-bases", json={"name": "l"}, headers=tenant).json()
    assert default["backend"] == "local"
    rejected = milvus_client.post("/v1/knowledge-bases", json={"name": "x", "backend": "elastic"}, headers=tenant)
    assert rejected.status_code == 422


def test_migration_copies_stored_embeddings_without_embedding(milvus_client, embedder, milvus_lite_uri):
    tenant = create_tenant(milvus_client)
    created = milvus_client.post("/v1/knowledge-bases", json={"name": "medical"}, headers=tenant).json()
    assert created["backend"] == "local"
    upload_ndjson(milvus_client, tenant, "medical", MEDICAL_DOCUMENTS + EXTRA_DOCUMENTS)
    milvus_client.put("/v1/aliases/live", json={"knowledge_base": "medical"}, headers=tenant)
    before = dense_top10(milvus_client, tenant, "medical")
    chunks = milvus_client.get("/v1/knowledge-bases/medical", headers=tenant).json()["chunk_count"]

    calls = embedder.calls
    response = milvus_client.post("/v1/knowledge-bases/live/migrate", json={"to": "milvus"}, headers=tenant)
    assert response.status_code == 200, response.text
    assert embedder.calls == calls, "migration must not embed anything"
    result = response.json()
    assert result["chunks_copied"] == chunks == result["knowledge_base"]["chunk_count"]
    assert result["knowledge_base"]["backend"] == "milvus"
    assert result["knowledge_base"]["id"] == created["id"]

    after = dense_top10(milvus_client, tenant, "live")
    overlap = [len(set(before[query]) & set(after[query])) / max(1, len(before[query])) for query in QUERIES]
    assert sum(overlap) / len(overlap) >= 0.95, overlap
    hits = milvus_client.post("/v1/knowledge-bases/live/search", json={"query": "aspirin myocardial infarction"},
                              headers=tenant).json()["hits"]
    assert hits[0]["document_id"] == "aspirin"
    assert hits[0]["ranks"] == {"bm25": 1, "dense": 1}
    again = milvus_client.post("/v1/knowledge-bases/medical/migrate", json={"to": "milvus"}, headers=tenant)
    assert again.status_code == 409
    # A second request that passed the route's check before the first one finished stops under the write lock.
    services = milvus_client.app.state.services
    owner = services.catalog.get_knowledge_base(created["id"]).tenant_id
    with pytest.raises(AlreadyMigrated):
        services.indices.migrate(created["id"], tenant_id=owner)

    # Writes after the migration go to Milvus, and only the local snapshot of the graph is left on disk.
    milvus_client.delete("/v1/knowledge-bases/medical/documents/aspirin", headers=tenant)
    hits = milvus_client.post("/v1/knowledge-bases/medical/search", json={"query": "aspirin", "retrievers": ["bm25"]},
                              headers=tenant).json()["hits"]
    assert "aspirin" not in [hit["document_id"] for hit in hits]
    store = MilvusStore(milvus_lite_uri)
    assert store.client.has_collection(collection_name(created["id"]))


def test_failed_milvus_batch_marks_documents_failed(milvus_client, monkeypatch):
    tenant = create_tenant(milvus_client)
    milvus_client.post("/v1/knowledge-bases", json={"name": "medical", "backend": "milvus"}, headers=tenant)
    upload_ndjson(milvus_client, tenant, "medical", MEDICAL_DOCUMENTS[:1])

    monkeypatch.setattr(milvus, "RETRY_DELAY_S", 0.0)
    attempts = []

    def refuse(self, *args, **kwargs):
        attempts.append(1)
        raise ConnectionError("Milvus is down")

    with monkeypatch.context() as patch:
        patch.setattr(MilvusCollection, "_upsert", refuse)
        job = upload_ndjson(milvus_client, tenant, "medical", MEDICAL_DOCUMENTS[1:])
    assert len(attempts) == milvus.WRITE_ATTEMPTS
    assert (job["status"], job["processed"], job["failed"]) == ("failed", 0, 2)
    assert "index backend failed" in job["errors"][0]["message"]
    listed = milvus_client.get("/v1/knowledge-bases/medical/documents", headers=tenant).json()
    assert [document["document_id"] for document in listed["data"]] == ["aspirin"]
    hits = milvus_client.post("/v1/knowledge-bases/medical/search", json={"query": "statins cholesterol insulin"},
                              headers=tenant).json()["hits"]
    assert {hit["document_id"] for hit in hits} <= {"aspirin"}

    # With Milvus back, the same upload is stored and indexed in full.
    job = upload_ndjson(milvus_client, tenant, "medical", MEDICAL_DOCUMENTS[1:])
    assert (job["status"], job["processed"]) == ("succeeded", 2)
    hits = milvus_client.post("/v1/knowledge-bases/medical/search", json={"query": "statins cholesterol"},
                              headers=tenant).json()["hits"]
    assert hits[0]["document_id"] == "statins"


def test_restart_reattaches_and_delete_drops_the_collection(milvus_settings, milvus_lite_uri):
    app = create_app(milvus_settings, embedder=FakeEmbedder(), generator=FakeGenerator())
    with TestClient(app) as client:
        tenant = create_tenant(client)
        kb = client.post("/v1/knowledge-bases", json={"name": "medical", "backend": "milvus"}, headers=tenant).json()
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
    with TestClient(create_app(milvus_settings, embedder=FakeEmbedder(), generator=FakeGenerator())) as client:
        hits = client.post("/v1/knowledge-bases/medical/search", json={"query": "insulin glucose"},
                           headers=tenant).json()["hits"]
        assert hits[0]["document_id"] == "insulin"
        assert hits[0]["ranks"] == {"bm25": 1, "dense": 1}
        assert client.delete("/v1/knowledge-bases/medical", headers=tenant).status_code == 200
    assert not MilvusStore(milvus_lite_uri).client.has_collection(collection_name(kb["id"]))


def test_dense_index_moves_to_hnsw_past_the_threshold(milvus_lite_uri):
    from retrievers.base import IndexedChunk

    collection = MilvusCollection(MilvusStore(milvus_lite_uri), knowledge_base_id="kb_threshold",
                                  tenant_id="tnt_a", dimension=8, analyzer=Analyzer(), approximate_threshold=20)
    collection.reset()
    vectors = np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [IndexedChunk(rowid=i + 1, text=f"chunk number {i}", embedding=vectors[i], document_id=f"d{i}",
                           chunk_id=f"d{i}#0") for i in range(30)]
    collection.add(chunks[:15])
    assert collection._index_type == "FLAT"
    collection.add(chunks[15:])
    assert collection._index_type == "HNSW"
    assert len(collection) == 30
    assert collection.search_dense(vectors[7], 1)[0].rowid == 8
    other_tenant = MilvusCollection(collection.store, knowledge_base_id="kb_threshold", tenant_id="tnt_b",
                                    dimension=8, analyzer=Analyzer())
    other_tenant.load(None)
    assert other_tenant.search_dense(vectors[7], 5) == []
    assert other_tenant.search_bm25("chunk", 5) == []
    collection.store.drop("kb_threshold")
