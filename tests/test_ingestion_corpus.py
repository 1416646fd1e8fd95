"""The ingestion test corpus through the REST API: per-file outcomes, BM25 recall, updates and deletes."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import create_tenant, make_settings, upload_ndjson, wait_for_job
from tests.corpus.files import CorpusFile, build_corpus
from tests.fakes import FakeEmbedder, FakeGenerator

KB = "corpus"


@pytest.fixture
def corpus_client(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(make_settings(tmp_path / "data", max_pdf_pages=5), embedder=FakeEmbedder(),
                     generator=FakeGenerator())
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def headers(corpus_client: TestClient) -> dict[str, str]:
    headers = create_tenant(corpus_client)
    response = corpus_client.post("/v1/knowledge-bases", json={"name": KB}, headers=headers)
    assert response.status_code == 201, response.text
    return headers


def upload_files(client: TestClient, headers: dict[str, str], files: list[CorpusFile], **params) -> dict:
    form = [("files", (file.name, file.data, "application/octet-stream")) for file in files]
    response = client.post(f"/v1/knowledge-bases/{KB}/documents", files=form, headers=headers, params=params)
    assert response.status_code == 202, response.text
    return wait_for_job(client, headers, response.json()["job_id"], timeout=120)


def bm25_ids(client: TestClient, headers: dict[str, str], query: str) -> list[str]:
    response = client.post(f"/v1/knowledge-bases/{KB}/search", headers=headers,
                           json={"query": query, "retrievers": ["bm25"], "top_k": 10})
    assert response.status_code == 200, response.text
    return [hit["document_id"] for hit in response.json()["hits"]]


def search_ids(client: TestClient, headers: dict[str, str], query: str, retrievers: list[str]) -> list[str]:
    response = client.post(f"/v1/knowledge-bases/{KB}/search", headers=headers,
                           json={"query": query, "retrievers": retrievers, "top_k": 50})
    return [hit["document_id"] for hit in response.json()["hits"]]


class TestCorpus:
    def test_corpus_has_every_case(self):
        corpus = build_corpus()
        uploads = [file for file in corpus if file.data is not None]
        assert len(uploads) >= 40
        suffixes = {Path(file.name).suffix.lower() for file in uploads}
        assert {".txt", ".md", ".pdf", ".docx", ".html", ".csv", ".ndjson", ".jsonl"} <= suffixes

    def test_per_file_outcomes_and_bm25_recall(self, corpus_client, headers):
        corpus = build_corpus()
        uploads = [file for file in corpus if file.data is not None]
        job = upload_files(corpus_client, headers, uploads)

        expected_errors = {file.name: file.error for file in corpus if file.error}
        errors = {error["source"]: error["message"] for error in job["errors"]}
        assert sorted(errors) == sorted(expected_errors)
        for source, fragment in expected_errors.items():
            assert fragment in errors[source], (source, errors[source])
        expected_documents = {file.document_id for file in corpus if file.document_id}
        expected_documents |= {"whole.csv#row3"}  # the second row of whole.csv, uploaded in row mode
        assert job["status"] == "completed_with_errors"
        assert job["failed"] == len(expected_errors)
        assert job["processed"] == len(expected_documents)
        assert job["total"] == job["processed"] + job["failed"]
        assert job["documents_per_second"] > 0

        listed = corpus_client.get(f"/v1/knowledge-bases/{KB}/documents", params={"limit": 1000},
                                   headers=headers).json()
        assert sorted(document["document_id"] for document in listed["data"]) == sorted(expected_documents)

        for file in corpus:
            if file.word is None:
                continue
            found = bm25_ids(corpus_client, headers, file.word)
            if file.word == "duplexian":
                assert sorted(found) == ["same-content-a.txt", "same-content-b.txt"]
            else:
                assert found == [file.document_id], file.name
            if file.hidden_word:
                assert bm25_ids(corpus_client, headers, file.hidden_word) == []

    def test_duplicate_upload_is_unchanged(self, corpus_client, headers):
        files = [file for file in build_corpus() if file.name in ("plain.txt", "report.pdf", "memo.docx")]
        first = upload_files(corpus_client, headers, files)
        assert (first["processed"], first["unchanged"], first["failed"]) == (3, 0, 0)
        second = upload_files(corpus_client, headers, files)
        assert (second["status"], second["processed"], second["unchanged"]) == ("succeeded", 3, 3)

    def test_csv_file_mode_makes_one_document(self, corpus_client, headers):
        whole = next(file for file in build_corpus() if file.name == "whole.csv")
        job = upload_files(corpus_client, headers, [whole], csv_mode="file")
        assert (job["status"], job["processed"]) == ("succeeded", 1)
        assert bm25_ids(corpus_client, headers, "spindlewick") == ["whole.csv"]

    def test_unknown_csv_mode_is_422(self, corpus_client, headers):
        response = corpus_client.post(f"/v1/knowledge-bases/{KB}/documents", params={"csv_mode": "column"},
                                      files=[("files", ("a.csv", b"a\n1\n"))], headers=headers)
        assert response.status_code == 422

    def test_pdf_chunk_knows_its_page(self, corpus_client, headers):
        report = next(file for file in build_corpus() if file.name == "multi-page.pdf")
        upload_files(corpus_client, headers, [report])
        response = corpus_client.post(f"/v1/knowledge-bases/{KB}/search", headers=headers,
                                      json={"query": "bindlethorpe", "retrievers": ["bm25"], "top_k": 1})
        assert response.json()["hits"][0]["metadata"]["pages"] == [5]

    def test_markdown_chunk_knows_its_heading_path(self, corpus_client, headers):
        notes = next(file for file in build_corpus() if file.name == "notes.md")
        upload_files(corpus_client, headers, [notes])
        response = corpus_client.post(f"/v1/knowledge-bases/{KB}/search", headers=headers,
                                      json={"query": "krestavel", "retrievers": ["bm25"], "top_k": 1})
        assert response.json()["hits"][0]["metadata"]["heading_path"] == ["Field guide", "Birds"]

    def test_nested_label_reachable_by_id(self, corpus_client, headers):
        nested = next(file for file in build_corpus() if file.name == "nested/dir/inner.txt")
        upload_files(corpus_client, headers, [nested])
        response = corpus_client.get(f"/v1/knowledge-bases/{KB}/documents/nested/dir/inner.txt", headers=headers)
        assert response.status_code == 200
        assert response.json()["source"] == "nested/dir/inner.txt"


class TestUpdateAndDelete:
    def test_update_leaves_only_new_text_in_every_retriever(self, corpus_client, headers):
        upload_ndjson(corpus_client, headers, KB, [{"id": "doc", "text": "The oldvariant enzyme binds zinc."}])
        job = upload_ndjson(corpus_client, headers, KB, [{"id": "doc", "text": "The newvariant enzyme binds iron."}])
        assert (job["processed"], job["unchanged"]) == (1, 0)
        for retrievers in (["bm25"], ["dense"], ["bm25", "dense"]):
            assert "doc" in search_ids(corpus_client, headers, "newvariant iron", retrievers)
            hits = corpus_client.post(f"/v1/knowledge-bases/{KB}/search", headers=headers,
                                      json={"query": "oldvariant zinc", "retrievers": retrievers}).json()["hits"]
            assert all("oldvariant" not in hit["text"] for hit in hits)

    def test_deleted_file_never_returned(self, corpus_client, headers):
        report = next(file for file in build_corpus() if file.name == "report.pdf")
        upload_files(corpus_client, headers, [report])
        assert corpus_client.delete(f"/v1/knowledge-bases/{KB}/documents/report.pdf",
                                    headers=headers).status_code == 204
        for retrievers in (["bm25"], ["dense"], ["bm25", "dense"]):
            assert "report.pdf" not in search_ids(corpus_client, headers, "glorpham variant quarterly report",
                                                  retrievers)
