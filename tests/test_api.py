"""The REST contract end to end through httpx, with the fake embedder and generator."""

import logging
import sqlite3
import threading

from fastapi.testclient import TestClient

from app.jobs import JobRunner
from tests.conftest import BOTH_INDEX_BACKENDS
from tests.conftest import (ADMIN_KEY, BOTH_CATALOGS, MEDICAL_DOCUMENTS, create_tenant, stored_catalog_bytes,
                            upload_ndjson, wait_for_job)

pytestmark = BOTH_CATALOGS


def create_kb(client: TestClient, headers: dict, name: str = "medical") -> dict:
    response = client.post("/v1/knowledge-bases", json={"name": name}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


class TestAuthentication:
    def test_missing_key_is_401(self, client):
        response = client.get("/v1/knowledge-bases")
        assert response.status_code == 401
        assert "missing Authorization header" in response.json()["detail"]

    def test_wrong_key_is_401(self, client):
        response = client.get("/v1/knowledge-bases", headers={"Authorization": "Bearer drk_not-a-real-key"})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid or revoked API key"

    def test_tenant_creation_needs_admin_key(self, client, tenant):
        response = client.post("/v1/tenants", json={"name": "other"}, headers=tenant)
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid admin key"

    def test_duplicate_tenant_is_409(self, client, tenant):
        response = client.post("/v1/tenants", json={"name": "acme"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 409

    def test_api_key_shown_once_and_not_stored(self, client, tenant, data_dir, database_url):
        key = tenant["Authorization"].split()[1]
        assert key.startswith("drk_")
        stored = stored_catalog_bytes(data_dir, database_url)
        assert tenant["Authorization"].split()[1][:12].encode() in stored  # the prefix is stored, to look keys up
        assert key.encode() not in stored


class TestKnowledgeBases:
    def test_create_list_get_delete(self, client, tenant):
        created = create_kb(client, tenant)
        assert created["name"] == "medical"
        assert created["document_count"] == 0

        listing = client.get("/v1/knowledge-bases", headers=tenant).json()
        assert listing["count"] == 1
        assert [kb["name"] for kb in listing["data"]] == ["medical"]

        assert client.get(f"/v1/knowledge-bases/{created['id']}", headers=tenant).json()["name"] == "medical"
        assert client.get("/v1/knowledge-bases/medical", headers=tenant).json()["id"] == created["id"]

        deleted = client.delete("/v1/knowledge-bases/medical", headers=tenant)
        assert deleted.status_code == 200
        assert deleted.json() == {"id": created["id"], "name": "medical", "deleted_aliases": []}
        assert client.get("/v1/knowledge-bases/medical", headers=tenant).status_code == 404

    def test_unknown_knowledge_base_is_404(self, client, tenant):
        response = client.post("/v1/knowledge-bases/nope/search", json={"query": "aspirin"}, headers=tenant)
        assert response.status_code == 404
        assert response.json()["detail"] == "knowledge base 'nope' not found"

    def test_duplicate_name_is_409(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases", json={"name": "medical"}, headers=tenant)
        assert response.status_code == 409

    def test_invalid_name_is_422(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "../etc"}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "name"]

    def test_overlap_not_below_size_is_422(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "x", "chunk_size": 50, "chunk_overlap": 50},
                               headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == "chunk_overlap (50) must be smaller than chunk_size (50)"

    def test_chunk_size_over_embedder_limit_is_422(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "x", "chunk_size": 10_000}, headers=tenant)
        assert response.status_code == 422
        assert "exceeds the embedder's input limit of 256 tokens" in response.json()["detail"]


class TestUnknownFields:
    # (method, path, body with one misspelt field, the misspelt name, the field it was meant to be)
    CASES = [
        ("POST", "/v1/tenants", {"name": "other", "rol": "read-only"}, "rol", "role"),
        ("POST", "/v1/keys", {"roles": "read-only"}, "roles", "role"),
        ("POST", "/v1/knowledge-bases", {"name": "x", "backnd": "milvus"}, "backnd", "backend"),
        ("POST", "/v1/knowledge-bases/medical/migrate", {"too": "milvus"}, "too", "to"),
        ("PUT", "/v1/aliases/live", {"knowledge_bases": "medical"}, "knowledge_bases", "knowledge_base"),
        ("POST", "/v1/knowledge-bases/medical/search", {"query": "x", "top_k": 5, "retreivers": ["bm25"]},
         "retreivers", "retrievers"),
        ("POST", "/v1/knowledge-bases/medical/query", {"query": "x", "max_tokens": 20}, "max_tokens",
         "max_new_tokens"),
    ]

    def test_every_request_body_rejects_them(self, client, tenant):
        create_kb(client, tenant)
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        for method, path, body, unknown, meant in self.CASES:
            headers = admin if path == "/v1/tenants" else tenant
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 422, (path, response.text)
            detail = response.json()["detail"]
            assert f"unknown field {unknown!r} (did you mean {meant!r}?); valid fields are: " in detail, detail
            unknown_errors = [error for error in response.json()["errors"] if error["type"] == "extra_forbidden"]
            assert [error["loc"] for error in unknown_errors] == [["body", unknown]]

    def test_message_lists_valid_fields(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "x", "shards": 2}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == ("unknown field 'shards'; valid fields are: backend, chunk_overlap, "
                                             "chunk_size, generator, name")

    def test_rejected_body_changes_nothing(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "x", "backnd": "milvus"}, headers=tenant)
        assert response.status_code == 422
        assert client.get("/v1/knowledge-bases", headers=tenant).json()["count"] == 0

    def test_unknown_and_invalid_fields_reported_together(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search", json={"query": "x", "top_k": 0, "topk": 3},
                               headers=tenant)
        assert response.status_code == 422
        assert [error["loc"] for error in response.json()["errors"]] == [["body", "top_k"], ["body", "topk"]]
        assert "unknown field 'topk' (did you mean 'top_k'?)" in response.json()["detail"]

    def test_invalid_json_names_the_position(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search", content=b'{"query": ',
                               headers={**tenant, "Content-Type": "application/json"})
        assert response.status_code == 422
        assert response.json()["detail"].startswith("request body is not valid JSON (Expecting value at character 10)")

    def test_body_that_is_not_an_object(self, client, tenant):
        create_kb(client, tenant)
        for body in (["aspirin"], "aspirin"):
            response = client.post("/v1/knowledge-bases/medical/search", json=body, headers=tenant)
            assert response.status_code == 422
            assert response.json()["detail"].startswith("request body must be a JSON object")


class TestValidationMessages:
    def test_top_k_out_of_range_names_range(self, client, tenant):
        create_kb(client, tenant)
        for route, maximum in (("search", 1000), ("query", 50)):
            for top_k in (0, 100000):
                response = client.post(f"/v1/knowledge-bases/medical/{route}", json={"query": "x", "top_k": top_k},
                                       headers=tenant)
                assert response.status_code == 422
                assert response.json()["detail"] == f"top_k must be between 1 and {maximum}; got {top_k}"

    def test_missing_query_names_field(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search", json={"top_k": 3}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == "missing required field 'query'"

    def test_query_parameters_name_range(self, client, tenant):
        create_kb(client, tenant)
        response = client.get("/v1/knowledge-bases/medical/documents?limit=0", headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == "limit must be between 1 and 1000; got 0"

        response = client.get("/v1/knowledge-bases/medical/graph/entities", headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == "missing required query parameter 'q'"

    def test_invalid_choice_lists_choices(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "x", "backend": "faiss"}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"] == "backend must be one of 'local', 'milvus'; got \"faiss\""

    def test_invalid_name_gives_rule(self, client, tenant):
        response = client.post("/v1/knowledge-bases", json={"name": "../etc"}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["detail"].startswith("invalid name \"../etc\"; use 1-64 characters")

    def test_invalid_tenant_role_lists_roles(self, client):
        response = client.post("/v1/tenants", json={"name": "other", "role": "admin"},
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert response.status_code == 422
        assert response.json()["detail"] == "role must be one of 'read-write', 'read-only'; got \"admin\""


@BOTH_INDEX_BACKENDS
class TestIngestionAndSearch:
    def test_ndjson_upload_then_search(self, client, tenant):
        create_kb(client, tenant)
        job = upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        assert job["status"] == "succeeded"
        assert (job["total"], job["processed"], job["failed"]) == (3, 3, 0)

        response = client.post("/v1/knowledge-bases/medical/search",
                               json={"query": "aspirin myocardial infarction", "top_k": 3}, headers=tenant)
        assert response.status_code == 200
        hits = response.json()["hits"]
        assert hits[0]["document_id"] == "aspirin"
        assert hits[0]["chunk_id"] == "aspirin#0"
        assert hits[0]["ranks"] == {"bm25": 1, "dense": 1}
        assert "Low-dose aspirin" in hits[0]["text"]

    def test_single_retriever_ranks_only_its_own(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        hits = client.post("/v1/knowledge-bases/medical/search",
                           json={"query": "cholesterol statins", "retrievers": ["bm25"]}, headers=tenant).json()["hits"]
        assert [hit["document_id"] for hit in hits] == ["statins"]
        assert hits[0]["ranks"] == {"bm25": 1}

    def test_unknown_retriever_is_422(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search",
                               json={"query": "x", "retrievers": ["bm25", "colbert"]}, headers=tenant)
        assert response.status_code == 422
        assert "colbert" in response.json()["detail"]

    def test_empty_query_is_422(self, client, tenant):
        create_kb(client, tenant)
        for query in ["", "   "]:
            response = client.post("/v1/knowledge-bases/medical/search", json={"query": query}, headers=tenant)
            assert response.status_code == 422
            assert response.json()["errors"][0]["loc"] == ["body", "query"]

    def test_malformed_ndjson_line_reported_others_ingested(self, client, tenant):
        create_kb(client, tenant)
        body = '{"id": "a", "text": "first document about kidneys"}\n{not json}\n{"id": "c", "text": "third one"}\n'
        job = upload_ndjson(client, tenant, "medical", body)
        assert job["status"] == "completed_with_errors"
        assert (job["processed"], job["failed"]) == (2, 1)
        assert job["errors"][0]["source"] == "upload.ndjson:2"
        assert job["errors"][0]["message"].startswith("line 2 is not valid JSON")
        listing = client.get("/v1/knowledge-bases/medical/documents", headers=tenant).json()
        assert [document["document_id"] for document in listing["data"]] == ["a", "c"]

    def test_line_without_id_is_reported(self, client, tenant):
        create_kb(client, tenant)
        job = upload_ndjson(client, tenant, "medical", '{"text": "no id here"}')
        assert job["errors"] == [{"source": "upload.ndjson:1",
                                  "message": 'line 1 has no "id" (or "_id"); give every document a unique id'}]

    def test_reupload_identical_is_unchanged(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        job = upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        assert (job["processed"], job["unchanged"]) == (3, 3)
        assert client.get("/v1/knowledge-bases/medical", headers=tenant).json()["document_count"] == 3

    def test_changed_document_replaces_old_chunks(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        upload_ndjson(client, tenant, "medical", [{"id": "aspirin", "text": "Paracetamol relieves fever."}])
        hits = client.post("/v1/knowledge-bases/medical/search", json={"query": "aspirin bleeding"},
                           headers=tenant).json()["hits"]
        assert all("Low-dose aspirin" not in hit["text"] for hit in hits)
        hits = client.post("/v1/knowledge-bases/medical/search", json={"query": "paracetamol fever"},
                           headers=tenant).json()["hits"]
        assert hits[0]["document_id"] == "aspirin"

    def test_delete_document_removes_it_from_every_retriever(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        assert client.delete("/v1/knowledge-bases/medical/documents/aspirin", headers=tenant).status_code == 204
        for retrievers in (["bm25"], ["dense"], ["bm25", "dense"]):
            hits = client.post("/v1/knowledge-bases/medical/search",
                               json={"query": "aspirin myocardial infarction", "retrievers": retrievers},
                               headers=tenant).json()["hits"]
            assert "aspirin" not in [hit["document_id"] for hit in hits]
        assert client.delete("/v1/knowledge-bases/medical/documents/aspirin", headers=tenant).status_code == 404

    def test_multipart_text_and_markdown_files(self, client, tenant):
        create_kb(client, tenant)
        files = [("files", ("notes.txt", b"Warfarin interacts with vitamin K.", "text/plain")),
                 ("files", ("guide.md", b"# Heparin dosing\n\nHeparin is dosed by weight.", "text/markdown")),
                 ("files", ("scan.exe", b"MZ\x00\x01", "application/octet-stream"))]
        response = client.post("/v1/knowledge-bases/medical/documents", files=files, headers=tenant)
        assert response.status_code == 202
        job = wait_for_job(client, tenant, response.json()["job_id"])
        assert (job["processed"], job["failed"]) == (2, 1)
        assert job["errors"][0]["source"] == "scan.exe"
        assert job["errors"][0]["message"].startswith("unsupported file type '.exe'")
        document = client.get("/v1/knowledge-bases/medical/documents/guide.md", headers=tenant).json()
        assert document["title"] == "Heparin dosing"

    def test_unsupported_content_type_is_415(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/documents", content=b"{}",
                               headers={**tenant, "Content-Type": "application/json"})
        assert response.status_code == 415

    def test_documents_are_paged(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        page = client.get("/v1/knowledge-bases/medical/documents?offset=1&limit=1", headers=tenant).json()
        assert (page["count"], page["total"]) == (1, 3)
        assert page["data"][0]["document_id"] == "statins"


class TestQuery:
    def test_answer_cites_its_passage(self, client, tenant):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        response = client.post("/v1/knowledge-bases/medical/query",
                               json={"query": "What does insulin therapy control?", "top_k": 2}, headers=tenant)
        assert response.status_code == 200
        body = response.json()
        assert body["answer"] == "Insulin therapy controls blood glucose in type 1 diabetes [1]."
        assert body["citations"][0]["marker"] == 1
        assert body["citations"][0]["document_id"] == "insulin"
        assert body["citations"][0]["chunk_id"] == "insulin#0"
        assert {"generate", "total"} <= set(body["timings_ms"])

    def test_prompt_frames_passages_as_data(self, client, tenant, generator):
        create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        client.post("/v1/knowledge-bases/medical/query", json={"query": "statins"}, headers=tenant)
        system, user = generator.prompts[-1]
        assert "not instructions" in system["content"]
        assert user["content"].startswith("Reference passages:")
        assert "Question: statins" in user["content"]

    def test_empty_knowledge_base_says_so(self, client, tenant):
        create_kb(client, tenant)
        body = client.post("/v1/knowledge-bases/medical/query", json={"query": "anything"}, headers=tenant).json()
        assert body["citations"] == []
        assert "no passages relevant" in body["answer"]


@BOTH_INDEX_BACKENDS
class TestAliases:
    def test_swap_alias_between_knowledge_bases(self, client, tenant):
        create_kb(client, tenant, "v1")
        create_kb(client, tenant, "v2")
        upload_ndjson(client, tenant, "v1", [{"id": "old", "text": "The old guideline recommends drug alpha."}])
        upload_ndjson(client, tenant, "v2", [{"id": "new", "text": "The new guideline recommends drug beta."}])

        assert client.put("/v1/aliases/live", json={"knowledge_base": "v1"}, headers=tenant).status_code == 200
        hits = client.post("/v1/knowledge-bases/live/search", json={"query": "guideline"}, headers=tenant).json()["hits"]
        assert [hit["document_id"] for hit in hits] == ["old"]

        swapped = client.put("/v1/aliases/live", json={"knowledge_base": "v2"}, headers=tenant).json()
        assert swapped["knowledge_base_name"] == "v2"
        hits = client.post("/v1/knowledge-bases/live/search", json={"query": "guideline"}, headers=tenant).json()["hits"]
        assert [hit["document_id"] for hit in hits] == ["new"]

    def test_deleting_knowledge_base_reports_its_aliases(self, client, tenant):
        create_kb(client, tenant, "v1")
        create_kb(client, tenant, "v2")
        for alias, target in (("live", "v1"), ("canary", "v1"), ("next", "v2")):
            assert client.put(f"/v1/aliases/{alias}", json={"knowledge_base": target}, headers=tenant).status_code == 200

        response = client.delete("/v1/knowledge-bases/live", headers=tenant)
        assert response.status_code == 200
        assert response.json()["name"] == "v1"
        assert response.json()["deleted_aliases"] == ["canary", "live"]
        assert [row["name"] for row in client.get("/v1/aliases", headers=tenant).json()["data"]] == ["next"]
        assert client.get("/v1/knowledge-bases/live", headers=tenant).status_code == 404

    def test_delete_during_job_logs_no_crash(self, client, tenant, monkeypatch, caplog):
        kb_id = create_kb(client, tenant, "v1")["id"]
        ran = threading.Event()

        def delete_then_write(runner, job):
            # What a DELETE racing the job does: the knowledge base and its jobs go, then the job's write fails.
            runner.services.catalog.delete_knowledge_base(kb_id)
            ran.set()
            raise sqlite3.IntegrityError("FOREIGN KEY constraint failed")

        monkeypatch.setattr(JobRunner, "_run_job", delete_then_write)
        with caplog.at_level(logging.INFO, logger="app.jobs"):
            response = client.post("/v1/knowledge-bases/v1/documents", content=b'{"id": "a", "text": "x"}',
                                   headers={**tenant, "Content-Type": "application/x-ndjson"})
            assert response.status_code == 202
            assert ran.wait(30)
            client.app.state.services.jobs.wait_idle()
        messages = [record.getMessage() for record in caplog.records if record.name == "app.jobs"]
        assert "ingestion job crashed" not in messages
        assert "knowledge base deleted while its ingestion job ran; job stopped" in messages

    def test_alias_to_missing_knowledge_base_is_404(self, client, tenant):
        response = client.put("/v1/aliases/live", json={"knowledge_base": "ghost"}, headers=tenant)
        assert response.status_code == 404

    def test_knowledge_base_named_like_alias_is_409(self, client, tenant):
        create_kb(client, tenant, "v1")
        client.put("/v1/aliases/live", json={"knowledge_base": "v1"}, headers=tenant)

        response = client.post("/v1/knowledge-bases", json={"name": "live"}, headers=tenant)
        assert response.status_code == 409
        assert "alias 'live'" in response.json()["detail"]
        assert client.get("/v1/knowledge-bases/live", headers=tenant).json()["name"] == "v1"

    def test_alias_named_like_knowledge_base_is_409(self, client, tenant):
        create_kb(client, tenant, "v1")
        create_kb(client, tenant, "v2")

        response = client.put("/v1/aliases/v2", json={"knowledge_base": "v1"}, headers=tenant)
        assert response.status_code == 409
        assert "knowledge base named 'v2'" in response.json()["detail"]
        assert client.get("/v1/aliases", headers=tenant).json()["count"] == 0


@BOTH_INDEX_BACKENDS
class TestTenantIsolation:
    def test_other_tenant_sees_404_everywhere(self, client, tenant):
        created = create_kb(client, tenant)
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        client.put("/v1/aliases/live", json={"knowledge_base": "medical"}, headers=tenant)
        intruder = create_tenant(client, "intruder")

        for reference in ("medical", created["id"], "live"):
            for method, path, body in [
                ("GET", f"/v1/knowledge-bases/{reference}", None),
                ("POST", f"/v1/knowledge-bases/{reference}/search", {"query": "aspirin"}),
                ("POST", f"/v1/knowledge-bases/{reference}/query", {"query": "aspirin"}),
                ("GET", f"/v1/knowledge-bases/{reference}/documents", None),
                ("DELETE", f"/v1/knowledge-bases/{reference}/documents/aspirin", None),
                ("DELETE", f"/v1/knowledge-bases/{reference}", None),
            ]:
                response = client.request(method, path, json=body, headers=intruder)
                assert response.status_code == 404, (method, path)
                assert response.json()["detail"] == f"knowledge base {reference!r} not found"

        assert client.get("/v1/knowledge-bases", headers=intruder).json()["count"] == 0
        response = client.put("/v1/aliases/mine", json={"knowledge_base": created["id"]}, headers=intruder)
        assert response.status_code == 404
        assert client.get("/v1/knowledge-bases/medical", headers=tenant).json()["document_count"] == 3

    def test_same_name_in_two_tenants(self, client, tenant):
        other = create_tenant(client, "other")
        create_kb(client, tenant)
        create_kb(client, other)
        upload_ndjson(client, tenant, "medical", [{"id": "secret", "text": "Only acme knows the zebra protocol."}])
        hits = client.post("/v1/knowledge-bases/medical/search", json={"query": "zebra protocol"},
                           headers=other).json()["hits"]
        assert hits == []

    def test_other_tenants_job_is_404(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/documents", content=b'{"id": "a", "text": "x"}',
                               headers={**tenant, "Content-Type": "application/x-ndjson"})
        intruder = create_tenant(client, "intruder")
        assert client.get(f"/v1/jobs/{response.json()['job_id']}", headers=intruder).status_code == 404


class TestHealth:
    def test_health_and_ready(self, client):
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").status_code == 200

    def test_openapi_lists_routes(self, client):
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/knowledge-bases/{kb}/search" in paths
        assert "/v1/aliases/{alias}" in paths


class TestRerank:
    def test_llm_rerank_reorders_by_relevance(self, client, tenant):
        create_kb(client, tenant)
        # BM25 prefers "rare" (one high-idf term); the fake judge prefers "both" (more query words).
        documents = [{"id": "rare", "text": "zeta zeta zeta"}, {"id": "both", "text": "eta theta"},
                     {"id": "f1", "text": "eta one"}, {"id": "f2", "text": "eta two"},
                     {"id": "f3", "text": "theta three"}, {"id": "f4", "text": "theta four"}]
        upload_ndjson(client, tenant, "medical", documents)
        body = {"query": "zeta eta theta", "top_k": 2, "retrievers": ["bm25"]}

        plain = client.post("/v1/knowledge-bases/medical/search", json=body, headers=tenant).json()
        assert [hit["document_id"] for hit in plain["hits"]] == ["rare", "both"]
        assert plain["hits"][0]["rerank_score"] is None

        reranked = client.post("/v1/knowledge-bases/medical/search", json={**body, "rerank": "llm"},
                               headers=tenant).json()
        assert [hit["document_id"] for hit in reranked["hits"]] == ["both", "rare"]
        assert [hit["rerank_score"] for hit in reranked["hits"]] == [2.0, 1.0]
        assert "rerank" in reranked["timings_ms"]

    def test_rerank_judges_only_candidates(self, client, tenant):
        create_kb(client, tenant)
        documents = [{"id": "rare", "text": "zeta zeta zeta"}, {"id": "both", "text": "eta theta"},
                     {"id": "f1", "text": "eta one"}, {"id": "f2", "text": "theta two"}]
        upload_ndjson(client, tenant, "medical", documents)
        body = {"query": "zeta eta theta", "top_k": 4, "retrievers": ["bm25"]}
        plain = client.post("/v1/knowledge-bases/medical/search", json=body, headers=tenant).json()

        reranked = client.post("/v1/knowledge-bases/medical/search",
                               json={**body, "rerank": "llm", "rerank_candidates": 2}, headers=tenant).json()
        assert [hit["document_id"] for hit in reranked["hits"][:2]] == ["both", "rare"]
        assert reranked["hits"][2:] == plain["hits"][2:]

    def test_cross_encoder_without_setting_is_422(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search",
                               json={"query": "insulin", "rerank": "cross-encoder"}, headers=tenant)
        assert response.status_code == 422
        assert "DOMAINRAG_CROSS_ENCODER" in response.json()["detail"]

    def test_unknown_rerank_mode_is_422(self, client, tenant):
        create_kb(client, tenant)
        response = client.post("/v1/knowledge-bases/medical/search", json={"query": "insulin", "rerank": "magic"},
                               headers=tenant)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "rerank"]
