"""The domainrag command's handling of missing credentials, and ingest's --create and --backend on a live service."""

import httpx
import pytest

from app.cli import main
from tests.conftest import ADMIN_KEY
from tests.live_service import live_service


def test_query_without_api_key_is_one_line_error(monkeypatch, capsys):
    monkeypatch.delenv("DOMAINRAG_API_KEY", raising=False)
    status = main(["query", "What lowers glucose?", "--kb", "medical", "--url", "http://127.0.0.1:9"])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("error: this command needs a tenant API key")
    assert "Traceback" not in error


@pytest.fixture
def service(tmp_path, milvus_lite_uri):
    """A live service on loopback and the API key of a tenant on it."""
    with live_service(tmp_path / "data", milvus_uri=milvus_lite_uri) as base_url:
        key = httpx.post(f"{base_url}/v1/tenants", json={"name": "cli"},
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()["api_key"]
        yield base_url, key


def knowledge_base_backend(base_url: str, key: str, name: str) -> str:
    response = httpx.get(f"{base_url}/v1/knowledge-bases/{name}", headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()["backend"]


def test_ingest_create_with_milvus_backend(service, tmp_path):
    base_url, key = service
    document = tmp_path / "aspirin.txt"
    document.write_text("Low-dose aspirin reduces the risk of myocardial infarction.")

    status = main(["ingest", str(document), "--kb", "notes", "--create", "--backend", "milvus",
                   "--url", base_url, "--api-key", key])
    assert status == 0
    assert knowledge_base_backend(base_url, key, "notes") == "milvus"


def test_ingest_create_defaults_to_service_backend(service, tmp_path):
    base_url, key = service
    document = tmp_path / "aspirin.txt"
    document.write_text("Low-dose aspirin reduces the risk of myocardial infarction.")

    assert main(["ingest", str(document), "--kb", "notes", "--create", "--url", base_url, "--api-key", key]) == 0
    assert knowledge_base_backend(base_url, key, "notes") == "local"


def test_ingest_backend_mismatch_is_error(service, tmp_path, capsys):
    base_url, key = service
    document = tmp_path / "aspirin.txt"
    document.write_text("Low-dose aspirin reduces the risk of myocardial infarction.")
    assert main(["ingest", str(document), "--kb", "notes", "--create", "--url", base_url, "--api-key", key]) == 0
    capsys.readouterr()

    status = main(["ingest", str(document), "--kb", "notes", "--create", "--backend", "milvus",
                   "--url", base_url, "--api-key", key])
    assert status == 2
    error = capsys.readouterr().err
    assert "already exists on the local backend, not milvus" in error
    assert "domainrag migrate notes --to milvus" in error
    assert knowledge_base_backend(base_url, key, "notes") == "local"


def test_ingest_backend_without_create_is_error(tmp_path, capsys):
    document = tmp_path / "aspirin.txt"
    document.write_text("aspirin")
    # The URL is never reached, because the command fails before it connects.
    status = main(["ingest", str(document), "--kb", "notes", "--backend", "milvus", "--url", "http://127.0.0.1:9",
                   "--api-key", "drk_unused"])
    assert status == 2
    assert capsys.readouterr().err.startswith("error: --backend sets the backend of a knowledge base that --create "
                                              "creates")


def test_ingest_rejects_unknown_backend(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ingest", "docs", "--kb", "notes", "--create", "--backend", "faiss"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'faiss'" in capsys.readouterr().err


def test_rejected_request_is_one_line_error(service, tmp_path, capsys):
    base_url, key = service
    document = tmp_path / "aspirin.txt"
    document.write_text("Low-dose aspirin reduces the risk of myocardial infarction.")

    status = main(["ingest", str(document), "--kb", "bad name", "--create", "--url", base_url, "--api-key", key])
    assert status == 2
    error = capsys.readouterr().err
    assert error.startswith("error: invalid name \"bad name\"; use ")
    assert "(HTTP 422 from POST " in error
    assert "\"errors\"" not in error
