"""API key management: admin and tenant routes, roles, revocation, and what a read-only key may not do."""

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_KEY, MEDICAL_DOCUMENTS, create_tenant, upload_ndjson

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tenant_id(client: TestClient, name: str) -> str:
    tenants = client.get("/v1/tenants", headers=ADMIN).json()["data"]
    return next(tenant["id"] for tenant in tenants if tenant["name"] == name)


class TestTenantKeys:
    def test_create_list_and_use_new_key(self, client, tenant):
        created = client.post("/v1/keys", json={"role": "read-only"}, headers=tenant)
        assert created.status_code == 201
        body = created.json()
        assert body["role"] == "read-only"
        assert body["api_key"].startswith(body["prefix"])
        assert len(body["prefix"]) == 12
        assert body["revoked_at"] is None

        listing = client.get("/v1/keys", headers=bearer(body["api_key"])).json()
        assert listing["count"] == 2
        assert [key["role"] for key in listing["data"]] == ["read-write", "read-only"]
        assert all("api_key" not in key for key in listing["data"])

    def test_new_key_is_not_stored(self, client, tenant, data_dir):
        key = client.post("/v1/keys", json={"role": "read-write"}, headers=tenant).json()["api_key"]
        assert key.encode() not in (data_dir / "catalog.sqlite3").read_bytes()

    def test_default_role_is_read_only(self, client, tenant):
        assert client.post("/v1/keys", json={}, headers=tenant).json()["role"] == "read-only"

    def test_invalid_role_is_422(self, client, tenant):
        response = client.post("/v1/keys", json={"role": "owner"}, headers=tenant)
        assert response.status_code == 422
        assert response.json()["errors"][0]["loc"] == ["body", "role"]

    def test_revoked_key_is_401(self, client, tenant):
        created = client.post("/v1/keys", json={"role": "read-write"}, headers=tenant).json()
        revoked = client.delete(f"/v1/keys/{created['id']}", headers=tenant)
        assert revoked.status_code == 200
        assert revoked.json()["revoked_at"] is not None

        response = client.get("/v1/knowledge-bases", headers=bearer(created["api_key"]))
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid or revoked API key"
        listed = {key["id"]: key for key in client.get("/v1/keys", headers=tenant).json()["data"]}
        assert listed[created["id"]]["revoked_at"] == revoked.json()["revoked_at"]

    def test_revoking_twice_keeps_first_time(self, client, tenant):
        created = client.post("/v1/keys", json={}, headers=tenant).json()
        first = client.delete(f"/v1/keys/{created['id']}", headers=tenant).json()["revoked_at"]
        second = client.delete(f"/v1/keys/{created['id']}", headers=tenant)
        assert second.status_code == 200
        assert second.json()["revoked_at"] == first

    def test_key_may_revoke_itself(self, client, tenant):
        own_id = client.get("/v1/keys", headers=tenant).json()["data"][0]["id"]
        assert client.delete(f"/v1/keys/{own_id}", headers=tenant).status_code == 200
        assert client.get("/v1/keys", headers=tenant).status_code == 401

    def test_unknown_key_is_404(self, client, tenant):
        response = client.delete("/v1/keys/key_missing", headers=tenant)
        assert response.status_code == 404
        assert response.json()["detail"] == "API key 'key_missing' not found"

    def test_other_tenants_key_is_404_and_stays_valid(self, client, tenant):
        other = create_tenant(client, "other")
        other_key_id = client.get("/v1/keys", headers=other).json()["data"][0]["id"]

        response = client.delete(f"/v1/keys/{other_key_id}", headers=tenant)
        assert response.status_code == 404
        assert response.json()["detail"] == f"API key {other_key_id!r} not found"
        assert client.get("/v1/knowledge-bases", headers=other).status_code == 200
        assert other_key_id not in [key["id"] for key in client.get("/v1/keys", headers=tenant).json()["data"]]

    def test_admin_key_is_not_a_tenant_key(self, client, tenant):
        assert client.get("/v1/keys", headers=ADMIN).status_code == 401
        assert client.get("/v1/knowledge-bases", headers=ADMIN).status_code == 401


class TestReadOnlyKey:
    @pytest.fixture
    def read_only(self, client, tenant) -> dict[str, str]:
        assert client.post("/v1/knowledge-bases", json={"name": "medical"}, headers=tenant).status_code == 201
        upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
        assert client.put("/v1/aliases/live", json={"knowledge_base": "medical"}, headers=tenant).status_code == 200
        return bearer(client.post("/v1/keys", json={"role": "read-only"}, headers=tenant).json()["api_key"])

    @pytest.mark.parametrize("method, path, body", [
        ("POST", "/v1/knowledge-bases", {"json": {"name": "new"}}),
        ("DELETE", "/v1/knowledge-bases/medical", {}),
        ("POST", "/v1/knowledge-bases/medical/documents",
         {"content": b'{"id": "x", "text": "y"}', "headers": {"Content-Type": "application/x-ndjson"}}),
        ("DELETE", "/v1/knowledge-bases/medical/documents/aspirin", {}),
        ("PUT", "/v1/aliases/live", {"json": {"knowledge_base": "medical"}}),
        ("DELETE", "/v1/aliases/live", {}),
        ("POST", "/v1/keys", {"json": {"role": "read-write"}}),
        ("DELETE", "/v1/keys/key_anything", {}),
    ])
    def test_write_is_403(self, client, read_only, method, path, body):
        headers = {**read_only, **body.pop("headers", {})}
        response = client.request(method, path, headers=headers, **body)
        assert response.status_code == 403
        assert response.json()["detail"] == "this API key is read-only; use a read-write key to change data"

    def test_writes_changed_nothing(self, client, tenant, read_only):
        for method, path in [("DELETE", "/v1/knowledge-bases/medical"), ("DELETE", "/v1/aliases/live"),
                             ("DELETE", "/v1/knowledge-bases/medical/documents/aspirin")]:
            client.request(method, path, headers=read_only)
        assert client.get("/v1/knowledge-bases/live", headers=tenant).json()["document_count"] == 3
        assert client.get("/v1/knowledge-bases/medical/documents/aspirin", headers=tenant).status_code == 200

    @pytest.mark.parametrize("method, path, body", [
        ("GET", "/v1/knowledge-bases", {}),
        ("GET", "/v1/knowledge-bases/live", {}),
        ("GET", "/v1/knowledge-bases/medical/documents", {}),
        ("GET", "/v1/knowledge-bases/medical/documents/aspirin", {}),
        ("GET", "/v1/aliases", {}),
        ("GET", "/v1/keys", {}),
        ("POST", "/v1/knowledge-bases/live/search", {"json": {"query": "aspirin"}}),
        ("POST", "/v1/knowledge-bases/live/query", {"json": {"query": "aspirin"}}),
    ])
    def test_read_is_allowed(self, client, read_only, method, path, body):
        assert client.request(method, path, headers=read_only, **body).status_code == 200


class TestAdminKeys:
    def test_admin_creates_lists_and_revokes(self, client, tenant):
        acme = tenant_id(client, "acme")
        created = client.post(f"/v1/tenants/{acme}/keys", json={"role": "read-write"}, headers=ADMIN)
        assert created.status_code == 201
        key = created.json()
        assert client.post("/v1/knowledge-bases", json={"name": "made-by-new-key"},
                           headers=bearer(key["api_key"])).status_code == 201

        listing = client.get(f"/v1/tenants/{acme}/keys", headers=ADMIN).json()
        assert listing["count"] == 2
        assert key["prefix"] in [entry["prefix"] for entry in listing["data"]]

        assert client.delete(f"/v1/tenants/{acme}/keys/{key['id']}", headers=ADMIN).status_code == 200
        assert client.get("/v1/knowledge-bases", headers=bearer(key["api_key"])).status_code == 401

    def test_unknown_tenant_is_404(self, client):
        response = client.post("/v1/tenants/tnt_missing/keys", json={}, headers=ADMIN)
        assert response.status_code == 404
        assert response.json()["detail"] == "tenant 'tnt_missing' not found"

    def test_key_of_another_tenant_is_404(self, client, tenant):
        create_tenant(client, "other")
        other_key_id = client.get(f"/v1/tenants/{tenant_id(client, 'other')}/keys", headers=ADMIN).json()["data"][0]["id"]
        response = client.delete(f"/v1/tenants/{tenant_id(client, 'acme')}/keys/{other_key_id}", headers=ADMIN)
        assert response.status_code == 404

    @pytest.mark.parametrize("method, path", [
        ("GET", "/v1/tenants"),
        ("GET", "/v1/tenants/{acme}/keys"),
        ("POST", "/v1/tenants/{acme}/keys"),
        ("DELETE", "/v1/tenants/{acme}/keys/key_anything"),
    ])
    def test_tenant_key_cannot_use_admin_routes(self, client, tenant, method, path):
        response = client.request(method, path.format(acme=tenant_id(client, "acme")), headers=tenant, json={})
        assert response.status_code == 401
        assert response.json()["detail"] == "invalid admin key"

    def test_list_tenants(self, client, tenant):
        create_tenant(client, "other")
        listing = client.get("/v1/tenants", headers=ADMIN).json()
        assert listing["count"] == 2
        assert [entry["name"] for entry in listing["data"]] == ["acme", "other"]
