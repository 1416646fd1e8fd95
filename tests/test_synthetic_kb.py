"""benchmarks/synthetic_kb.py builds a knowledge base that the service opens from its snapshot, embedding nothing."""

import json

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from benchmarks.synthetic_kb import create_api_key, prepare_knowledge_base
from storage.catalog import Catalog
from tests.conftest import make_settings
from tests.fakes import FakeEmbedder, FakeGenerator

ABSTRACTS = [
    {"_id": "1", "title": "Statins", "text": "Statins lower LDL cholesterol and cardiovascular risk in adults."},
    {"_id": "2", "title": "Insulin", "text": "Insulin therapy lowers blood glucose in type 2 diabetes."},
    {"_id": "3", "title": "Aspirin", "text": "Low-dose aspirin reduces myocardial infarction but raises bleeding."},
    {"_id": "4", "title": "Vitamin D", "text": "Vitamin D supplements did not prevent fractures in older adults."},
]
CHUNKS = 95
CHUNKS_PER_DOCUMENT = 10


@pytest.fixture
def corpus_path(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(abstract) + "\n" for abstract in ABSTRACTS))
    return path


def build(data_dir, corpus_path, chunks=CHUNKS):
    return prepare_knowledge_base(data_dir, chunks=chunks, corpus_path=corpus_path, embedder=FakeEmbedder(),
                                  chunks_per_document=CHUNKS_PER_DOCUMENT, base_documents=3)


def test_catalog_contains_every_chunk(data_dir, corpus_path):
    description = build(data_dir, corpus_path)
    catalog = Catalog(data_dir / "catalog.sqlite3")
    assert catalog.count_documents(description.knowledge_base_id) == (10, CHUNKS)
    assert description.base_vectors == 3


def test_service_searches_without_embedding_chunks(data_dir, corpus_path):
    description = build(data_dir, corpus_path)
    api_key = create_api_key(data_dir, description)
    embedder = FakeEmbedder()
    app = create_app(make_settings(data_dir, graph_index=False), embedder=embedder, generator=FakeGenerator())
    with TestClient(app) as client:
        response = client.post(f"/v1/knowledge-bases/{description.knowledge_base}/search",
                               json={"query": "cholesterol glucose", "top_k": 5, "retrievers": ["bm25", "dense"]},
                               headers={"Authorization": f"Bearer {api_key}"})
    assert response.status_code == 200, response.text
    assert len(response.json()["hits"]) == 5
    # One call embedded the query; the chunks came with their vectors and the indices from the snapshot.
    assert embedder.calls == 1


def test_same_request_reuses_the_directory(data_dir, corpus_path):
    first = build(data_dir, corpus_path)
    assert build(data_dir, corpus_path) == first


def test_other_size_is_rejected(data_dir, corpus_path):
    build(data_dir, corpus_path)
    with pytest.raises(ValueError, match="already contains a synthetic knowledge base"):
        build(data_dir, corpus_path, chunks=CHUNKS + 1)


def test_unfinished_directory_is_rejected(data_dir, corpus_path):
    data_dir.mkdir(parents=True)
    (data_dir / "catalog.sqlite3").write_bytes(b"")
    with pytest.raises(ValueError, match="is not empty"):
        build(data_dir, corpus_path)
