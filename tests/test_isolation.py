"""Tenant isolation: tenant B, with keys of its own, attacks tenant A's knowledge base on every route.

B names A's knowledge base by id, by name and by alias, searches and queries in every retriever mode, and
tries A's documents, jobs, aliases and keys. Every attempt must fail exactly as for something that does not
exist, and no response may contain A's secret phrase or ids.
"""

import json
import typing
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.rag import RETRIEVERS
from app.schemas import QueryRequest
from tests.conftest import BOTH_CATALOGS, create_tenant, make_settings, upload_ndjson, wait_for_job
from tests.fakes import FakeEmbedder, FakeGenerator

SECRET = "Quetzalcoatl-ledger-9046"
SECRET_DOCUMENTS = [
    {"id": "vault", "title": "Vault procedures", "text": f"The vault phrase is {SECRET}. Keep it with the ledger."},
    {"id": "ledger", "title": "Ledger", "text": f"The ledger records {SECRET} for the quarterly audit."},
]
B_DOCUMENTS = [{"id": "b-notes", "title": "Notes", "text": "Tenant B keeps notes about the ledger and the vault."}]
MISSING = "no-such-knowledge-base"

pytestmark = BOTH_CATALOGS


def retriever_sets() -> list[list[str]]:
    """Each retriever alone, then all of them together, so a newly added retriever is attacked too."""
    return [[name] for name in RETRIEVERS] + [list(RETRIEVERS)]


def query_modes() -> list[str | None]:
    field = QueryRequest.model_fields.get("mode")
    return list(typing.get_args(field.annotation)) if field is not None else [None]


@pytest.fixture
def client(data_dir, database_url) -> Iterator[TestClient]:
    # The rate limit is off because B sends a few hundred requests in a burst.
    settings = make_settings(data_dir, database_url, rate_limit_per_second=0)
    with TestClient(create_app(settings, embedder=FakeEmbedder(), generator=FakeGenerator())) as test_client:
        yield test_client


@pytest.fixture
def world(client) -> dict:
    """Build tenant A with a secret knowledge base, an alias, a job and keys, and tenant B with its own."""
    a = create_tenant(client, "tenant-a")
    kb_a = client.post("/v1/knowledge-bases", json={"name": "shared-name"}, headers=a).json()
    upload = client.post("/v1/knowledge-bases/shared-name/documents", headers={**a, "Content-Type": "application/x-ndjson"},
                         content="\n".join(json.dumps(document) for document in SECRET_DOCUMENTS).encode())
    job_a = wait_for_job(client, a, upload.json()["job_id"])
    assert job_a["status"] == "succeeded"
    assert client.put("/v1/aliases/live", json={"knowledge_base": "shared-name"}, headers=a).status_code == 200
    a_key_ids = [key["id"] for key in client.get("/v1/keys", headers=a).json()["data"]]

    b_admin = create_tenant(client, "tenant-b")
    b_reader = {"Authorization": "Bearer " + client.post("/v1/keys", json={"role": "read-only"},
                                                         headers=b_admin).json()["api_key"]}
    kb_b = client.post("/v1/knowledge-bases", json={"name": "own"}, headers=b_admin).json()
    upload_ndjson(client, b_admin, "own", B_DOCUMENTS)
    return {"a": a, "kb_a": kb_a, "job_a": job_a, "a_key_ids": a_key_ids, "b_keys": [b_admin, b_reader],
            "kb_b": kb_b}


def references(world: dict) -> dict[str, str]:
    return {"id": world["kb_a"]["id"], "name": "shared-name", "alias": "live"}


def assert_no_leak(response, world: dict, echoed: str = "") -> None:
    """Assert that a response contains none of A's data, apart from `echoed`, the reference B sent."""
    text = response.text.replace(echoed, "") if echoed else response.text
    assert SECRET not in text
    assert world["kb_a"]["id"] not in text
    assert world["job_a"]["id"] not in text


def assert_like_missing(client, response, headers, method: str, path: str, reference: str, **request) -> None:
    """Assert that a response equals the one for a knowledge base that exists nowhere."""
    missing = client.request(method, path.replace(reference, MISSING, 1), headers=headers, **request)
    assert response.status_code == 404
    assert missing.status_code == 404
    assert response.json()["detail"] == missing.json()["detail"].replace(MISSING, reference)


def knowledge_base_routes(client) -> list[tuple[str, str]]:
    """Every (method, path template) of the app that names a knowledge base, graph routes included."""
    routes = []
    for path, operations in client.app.openapi()["paths"].items():
        if "{kb}" in path:
            routes.extend((method.upper(), path) for method in sorted(operations))
    return routes


def fill(path: str, reference: str) -> str:
    path = path.replace("{kb}", reference)
    path = path.replace("{document_id}", "vault")
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + "x" + path[end + 1:]
    return path


REQUEST_BODIES = {
    "POST": {"json": {"query": SECRET}},
    "PUT": {"json": {"query": SECRET}},
    "PATCH": {"json": {"query": SECRET}},
}


class TestKnowledgeBaseRoutes:
    def test_route_table_covers_known_routes(self, client):
        paths = {path for _, path in knowledge_base_routes(client)}
        assert "/v1/knowledge-bases/{kb}" in paths
        assert "/v1/knowledge-bases/{kb}/search" in paths
        assert "/v1/knowledge-bases/{kb}/query" in paths
        assert "/v1/knowledge-bases/{kb}/documents" in paths

    def test_owner_reaches_every_route(self, client, world):
        """The same requests from A find the knowledge base, so B's 404s below are not vacuous."""
        for method, template in knowledge_base_routes(client):
            if method == "DELETE":
                continue
            for reference in references(world).values():
                response = client.request(method, fill(template, reference), headers=world["a"],
                                          **REQUEST_BODIES.get(method, {}))
                assert response.status_code != 404 or "knowledge base" not in response.json()["detail"], \
                    (method, template, reference, response.text)

    def test_every_route_fails_as_if_missing(self, client, world):
        b_admin, b_reader = world["b_keys"]
        attempts = 0
        for headers in (b_admin, b_reader):
            for method, template in knowledge_base_routes(client):
                for reference in references(world).values():
                    path = fill(template, reference)
                    request = REQUEST_BODIES.get(method, {})
                    response = client.request(method, path, headers=headers, **request)
                    missing = client.request(method, fill(template, MISSING), headers=headers, **request)

                    # A read-only key is rejected on a write before any lookup, for A's knowledge base as for none.
                    is_write = method == "DELETE" or (method == "POST" and template.endswith(("/documents", "/migrate")))
                    expected = 403 if headers is b_reader and is_write else 404
                    assert response.status_code == expected, (method, path, response.text)
                    assert missing.status_code == expected, (method, template)
                    assert response.json()["detail"] == missing.json()["detail"].replace(MISSING, reference)
                    assert_no_leak(response, world, reference)
                    attempts += 1
        assert attempts >= 2 * 3 * 8

    def test_upload_is_404_and_stores_nothing(self, client, world):
        b_admin = world["b_keys"][0]
        headers = {**b_admin, "Content-Type": "application/x-ndjson"}
        for reference in references(world).values():
            path = f"/v1/knowledge-bases/{reference}/documents"
            response = client.post(path, content=b'{"id": "x", "text": "y"}', headers=headers)
            assert_like_missing(client, response, headers, "POST", path, reference, content=b'{"id": "x", "text": "y"}')
        assert client.get("/v1/knowledge-bases/shared-name", headers=world["a"]).json()["document_count"] == 2

    def test_delete_attempts_change_nothing(self, client, world):
        b_admin = world["b_keys"][0]
        for reference in references(world).values():
            for path in (f"/v1/knowledge-bases/{reference}", f"/v1/knowledge-bases/{reference}/documents/vault"):
                response = client.delete(path, headers=b_admin)
                assert_like_missing(client, response, b_admin, "DELETE", path, reference)
        knowledge_base = client.get("/v1/knowledge-bases/live", headers=world["a"]).json()
        assert knowledge_base["id"] == world["kb_a"]["id"]
        assert knowledge_base["document_count"] == 2


class TestSearchAndQuery:
    @pytest.mark.parametrize("retrievers", retriever_sets(), ids=lambda names: "+".join(names))
    def test_search_other_tenant_is_404(self, client, world, retrievers):
        for headers in world["b_keys"]:
            for reference in references(world).values():
                path = f"/v1/knowledge-bases/{reference}/search"
                body = {"query": SECRET, "retrievers": retrievers, "top_k": 50}
                response = client.post(path, json=body, headers=headers)
                assert_like_missing(client, response, headers, "POST", path, reference, json=body)
                assert_no_leak(response, world, reference)

    @pytest.mark.parametrize("retrievers", retriever_sets(), ids=lambda names: "+".join(names))
    @pytest.mark.parametrize("mode", query_modes())
    def test_query_other_tenant_is_404(self, client, world, retrievers, mode):
        for headers in world["b_keys"]:
            for reference in references(world).values():
                path = f"/v1/knowledge-bases/{reference}/query"
                body = {"query": SECRET, "retrievers": retrievers, **({"mode": mode} if mode else {})}
                response = client.post(path, json=body, headers=headers)
                assert_like_missing(client, response, headers, "POST", path, reference, json=body)
                assert_no_leak(response, world, reference)

    @pytest.mark.parametrize("retrievers", retriever_sets(), ids=lambda names: "+".join(names))
    def test_own_knowledge_base_never_returns_secret(self, client, world, retrievers):
        for headers in world["b_keys"]:
            search = client.post("/v1/knowledge-bases/own/search", headers=headers,
                                 json={"query": SECRET, "retrievers": retrievers, "top_k": 100})
            assert search.status_code == 200
            assert {hit["document_id"] for hit in search.json()["hits"]} <= {"b-notes"}
            assert_no_leak(search, world)

            for mode in query_modes():
                body = {"query": SECRET, "retrievers": retrievers, **({"mode": mode} if mode else {})}
                query = client.post("/v1/knowledge-bases/own/query", headers=headers, json=body)
                assert query.status_code == 200
                assert {citation["document_id"] for citation in query.json()["citations"]} <= {"b-notes"}
                assert_no_leak(query, world)

    def test_secret_is_findable_by_owner(self, client, world):
        """A finds its own secret in every retriever mode, so B's empty results are not vacuous."""
        for retrievers in retriever_sets():
            response = client.post("/v1/knowledge-bases/live/search", headers=world["a"],
                                   json={"query": SECRET, "retrievers": retrievers, "top_k": 10})
            assert response.status_code == 200
            if retrievers != ["graph"]:
                assert SECRET in response.text, retrievers

    def test_same_name_resolves_to_own(self, client, world):
        b_admin = world["b_keys"][0]
        created = client.post("/v1/knowledge-bases", json={"name": "shared-name"}, headers=b_admin)
        assert created.status_code == 201
        assert created.json()["id"] != world["kb_a"]["id"]
        upload_ndjson(client, b_admin, "shared-name", B_DOCUMENTS)
        for retrievers in retriever_sets():
            response = client.post("/v1/knowledge-bases/shared-name/search", headers=b_admin,
                                   json={"query": SECRET, "retrievers": retrievers, "top_k": 100})
            assert response.status_code == 200
            assert {hit["document_id"] for hit in response.json()["hits"]} <= {"b-notes"}
            assert_no_leak(response, world)


class TestOtherResources:
    def test_job_of_other_tenant_is_404(self, client, world):
        for headers in world["b_keys"]:
            response = client.get(f"/v1/jobs/{world['job_a']['id']}", headers=headers)
            assert response.status_code == 404
            assert response.json()["detail"] == f"job {world['job_a']['id']!r} not found"

    def test_alias_to_other_tenants_knowledge_base_is_404(self, client, world):
        b_admin = world["b_keys"][0]
        for target in (world["kb_a"]["id"], "shared-name", "live"):
            response = client.put("/v1/aliases/stolen", json={"knowledge_base": target}, headers=b_admin)
            assert response.status_code == 404
            assert response.json()["detail"] == f"knowledge base {target!r} not found"
        assert client.get("/v1/aliases", headers=b_admin).json()["count"] == 0

    def test_alias_delete_of_other_tenant_is_404(self, client, world):
        response = client.delete("/v1/aliases/live", headers=world["b_keys"][0])
        assert response.status_code == 404
        assert response.json()["detail"] == "alias 'live' not found"
        assert client.get("/v1/knowledge-bases/live", headers=world["a"]).status_code == 200

    def test_same_alias_name_is_per_tenant(self, client, world):
        b_admin = world["b_keys"][0]
        assert client.put("/v1/aliases/live", json={"knowledge_base": "own"}, headers=b_admin).status_code == 200
        assert client.get("/v1/knowledge-bases/live", headers=b_admin).json()["id"] == world["kb_b"]["id"]
        assert client.get("/v1/knowledge-bases/live", headers=world["a"]).json()["id"] == world["kb_a"]["id"]

    def test_listings_show_only_own(self, client, world):
        for headers in world["b_keys"]:
            for path in ("/v1/knowledge-bases", "/v1/aliases", "/v1/keys"):
                response = client.get(path, headers=headers)
                assert response.status_code == 200
                assert_no_leak(response, world)
                assert "shared-name" not in response.text
                assert not any(key_id in response.text for key_id in world["a_key_ids"])

    def test_keys_of_other_tenant_cannot_be_revoked(self, client, world):
        for key_id in world["a_key_ids"]:
            response = client.delete(f"/v1/keys/{key_id}", headers=world["b_keys"][0])
            assert response.status_code == 404
            assert response.json()["detail"] == f"API key {key_id!r} not found"
        assert client.get("/v1/knowledge-bases", headers=world["a"]).status_code == 200
