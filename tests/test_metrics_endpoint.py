"""The /metrics endpoint, request ids and the JSON log lines of each request."""

import json
import logging
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.logs import JsonFormatter
from tests.conftest import MEDICAL_DOCUMENTS, upload_ndjson

SECRET_TEXT = "Zanzibar-quokka-7731 is the secret body text"


def scrape(client) -> dict[str, list]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list], name: str, **labels: str) -> float:
    matching = [sample.value for sample in samples.get(name, [])
                if all(sample.labels.get(key) == wanted for key, wanted in labels.items())]
    assert len(matching) == 1, (name, labels, samples.get(name))
    return matching[0]


@pytest.fixture
def seeded(client, tenant) -> dict:
    knowledge_base = client.post("/v1/knowledge-bases", json={"name": "medical"}, headers=tenant).json()
    upload_ndjson(client, tenant, "medical", MEDICAL_DOCUMENTS)
    return knowledge_base


class TestMetrics:
    def test_requests_counted_by_route_template(self, client, tenant, seeded):
        for _ in range(2):
            client.post("/v1/knowledge-bases/medical/search", json={"query": "aspirin"}, headers=tenant)
        client.post("/v1/knowledge-bases/missing/search", json={"query": "aspirin"}, headers=tenant)
        client.get("/no/such/path")

        samples = scrape(client)
        route = "/v1/knowledge-bases/{kb}/search"
        assert value(samples, "domainrag_http_requests_total", method="POST", route=route, status="200") == 2
        assert value(samples, "domainrag_http_requests_total", method="POST", route=route, status="404") == 1
        assert value(samples, "domainrag_http_requests_total", method="GET", route="unmatched", status="404") == 1
        assert value(samples, "domainrag_http_request_duration_seconds_count", method="POST", route=route) == 3
        assert not any("medical" in sample.labels.get("route", "") or "missing" in sample.labels.get("route", "")
                       for sample in samples["domainrag_http_requests_total"])

    def test_pipeline_stages_observed(self, client, tenant, seeded):
        client.post("/v1/knowledge-bases/medical/search", json={"query": "aspirin"}, headers=tenant)
        client.post("/v1/knowledge-bases/medical/query", json={"query": "aspirin"}, headers=tenant)

        samples = scrape(client)
        name = "domainrag_pipeline_stage_duration_seconds_count"
        for stage in ("embed_query", "bm25", "dense", "fuse_and_fetch"):
            assert value(samples, name, endpoint="search", stage=stage) == 1
        for stage in ("generate", "total"):
            assert value(samples, name, endpoint="query", stage=stage) == 1

    def test_ingestion_and_sizes_reported(self, client, tenant, seeded):
        samples = scrape(client)
        assert value(samples, "domainrag_ingestion_jobs", status="succeeded") == 1
        assert value(samples, "domainrag_ingestion_documents", outcome="processed") == 3
        assert value(samples, "domainrag_ingestion_documents", outcome="failed") == 0
        assert value(samples, "domainrag_knowledge_base_documents", knowledge_base=seeded["id"]) == 3
        assert value(samples, "domainrag_knowledge_base_chunks", knowledge_base=seeded["id"]) == 3
        assert value(samples, "domainrag_index_snapshot_bytes", knowledge_base=seeded["id"]) > 0

    def test_metrics_carry_no_names_or_text(self, client, tenant, seeded):
        text = client.get("/metrics").text
        assert "medical" not in text
        assert "acme" not in text
        assert "aspirin" not in text.lower()


class TestRequestIds:
    def test_generated_id_echoed(self, client):
        response = client.get("/healthz")
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])

    def test_client_id_reused(self, client):
        assert client.get("/healthz", headers={"X-Request-ID": "app-7.abc"}).headers["X-Request-ID"] == "app-7.abc"

    def test_unsafe_client_id_replaced(self, client):
        response = client.get("/healthz", headers={"X-Request-ID": 'x" "level": "ERROR'})
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])

    def test_error_responses_carry_id(self, client):
        assert "X-Request-ID" in client.get("/v1/knowledge-bases").headers


class TestRequestLogs:
    @pytest.fixture
    def log_lines(self):
        """Capture every log record as the JSON line the service would write."""
        lines: list[str] = []
        formatter = JsonFormatter()

        class Capture(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                lines.append(formatter.format(record))

        handler = Capture(level=logging.INFO)
        root = logging.getLogger()
        previous_level = root.level
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        yield lines
        root.removeHandler(handler)
        root.setLevel(previous_level)

    def test_access_line_has_ids(self, client, tenant, seeded, log_lines):
        response = client.post("/v1/knowledge-bases/medical/search", json={"query": "aspirin"},
                               headers={**tenant, "X-Request-ID": "trace-42"})
        entries = [json.loads(line) for line in log_lines]
        finished = [entry for entry in entries if entry["message"] == "request finished"
                    and entry.get("request_id") == "trace-42"]
        assert len(finished) == 1
        assert finished[0]["route"] == "/v1/knowledge-bases/{kb}/search"
        assert finished[0]["status"] == response.status_code
        assert finished[0]["knowledge_base"] == seeded["id"]
        assert finished[0]["tenant"].startswith("tnt_")
        assert finished[0]["ms"] >= 0

    def test_logs_never_hold_text_or_keys(self, client, tenant, log_lines):
        client.post("/v1/knowledge-bases", json={"name": "secrets"}, headers=tenant)
        upload_ndjson(client, tenant, "secrets", [{"id": "s1", "title": SECRET_TEXT, "text": SECRET_TEXT}])
        client.post("/v1/knowledge-bases/secrets/query", json={"query": SECRET_TEXT}, headers=tenant)
        created = client.post("/v1/keys", json={"role": "read-only"}, headers=tenant).json()["api_key"]
        client.get("/v1/keys", headers={"Authorization": f"Bearer {created}"})

        text = "\n".join(log_lines)
        assert "request finished" in text
        assert "Zanzibar" not in text
        assert tenant["Authorization"].split()[1] not in text
        assert created not in text

    def test_formatter_masks_key_in_message(self):
        record = logging.makeLogRecord({"msg": "bad key drk_abcdefghijklmnop", "levelname": "INFO"})
        assert json.loads(JsonFormatter().format(record))["message"] == "bad key drk_[redacted]"
