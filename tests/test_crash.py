"""Crash test: SIGKILL `domainrag serve` at random points during bulk ingestion and deletes, then restart.

The service runs as a subprocess with the real MiniLM embedder and the extractive generator. Even-numbered
cycles upload a new version of a batch of documents and kill the service while the job runs. Odd-numbered
cycles delete documents one by one and kill it mid-stream. Jobs left unfinished resume after each restart.
At the end:

- the catalog passes `PRAGMA integrity_check`, and every document has exactly its recorded chunks;
- every chunk in the catalog is found by BM25 and by dense search, and each index holds no other entry;
- every acknowledged delete stayed deleted and every document of a finished upload is present.

Each restart loads torch and MiniLM again (about 19 s measured on a shared 2-core machine), so the default
20 kills take several minutes. DOMAINRAG_CRASH_KILLS sets the number of kills.
"""

import json
import os
import random
import signal
import sqlite3
import threading
import time
from pathlib import Path

import httpx
import pytest

from storage.catalog import Catalog
from storage.knowledge_base import MANIFEST, IndexRegistry
from tests.conftest import ADMIN_KEY, ServiceProcess
KILLS = int(os.environ.get("DOMAINRAG_CRASH_KILLS", "20"))
STABLE_DOCUMENTS = 60
CHURN_BATCHES = 2
CHURN_BATCH_DOCUMENTS = 60
COMMON_TERM = "crashcorpus"
SEED = 20261204

pytestmark = pytest.mark.integration


def stable_documents() -> list[dict]:
    return [{"id": f"stable-{number}", "title": f"Stable record {number}",
             "text": f"{COMMON_TERM} stable record {number} lists pump {number % 11} and valve {number % 5}."}
            for number in range(STABLE_DOCUMENTS)]


def churn_documents(batch: int, version: int) -> list[dict]:
    return [{"id": f"churn-{batch}-{number}", "title": f"Churn record {batch}-{number}",
             "text": f"{COMMON_TERM} churn record {number} of batch {batch}, version {version}: "
                     f"sensor {number % 7} drift {version * 3 + number % 13} units."}
            for number in range(CHURN_BATCH_DOCUMENTS)]


def post_ndjson(http: httpx.Client, headers: dict, documents: list[dict]) -> str:
    response = http.post("/v1/knowledge-bases/crash/documents", headers={**headers, "Content-Type": "application/x-ndjson"},
                         content="\n".join(json.dumps(document) for document in documents).encode())
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_for_jobs(http: httpx.Client, headers: dict, job_ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    finished = {}
    for job_id in job_ids:
        while True:
            job = http.get(f"/v1/jobs/{job_id}", headers=headers).json()
            if job["status"] not in ("queued", "running"):
                finished[job_id] = job
                break
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout:.0f} s"
            time.sleep(0.5)
    return finished


class Deleter(threading.Thread):
    """Delete documents one at a time until the service dies; record every attempted and acknowledged delete."""

    # A pause between deletes spreads them over the time before the kill, so that it lands mid-stream.
    PAUSE_SECONDS = 0.03

    def __init__(self, url: str, headers: dict, candidates: list[str]) -> None:
        super().__init__(name="deleter", daemon=True)
        self.url = url
        self.headers = headers
        self.candidates = candidates
        self.attempted: list[str] = []
        self.acknowledged: list[str] = []
        self.server_errors: list[str] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as http:
            for document_id in self.candidates:
                time.sleep(self.PAUSE_SECONDS)
                self.attempted.append(document_id)
                try:
                    response = http.delete(f"/v1/knowledge-bases/crash/documents/{document_id}", headers=self.headers)
                except httpx.TransportError:
                    return
                if response.status_code == 204:
                    self.acknowledged.append(document_id)
                elif response.status_code >= 500:
                    self.server_errors.append(f"{response.status_code} {response.text[:200]}")


def indexed_chunk_ids(http: httpx.Client, headers: dict, retriever: str) -> set[str]:
    response = http.post("/v1/knowledge-bases/crash/search", headers=headers,
                         json={"query": COMMON_TERM, "retrievers": [retriever], "top_k": 1000})
    assert response.status_code == 200, response.text
    return {hit["chunk_id"] for hit in response.json()["hits"]}


def catalog_state(catalog_path: Path) -> tuple[str, dict[str, int], set[str], list[str]]:
    """Read the catalog directly: integrity check, chunk count per document, chunk ids, inconsistencies."""
    connection = sqlite3.connect(f"file:{catalog_path}?mode=ro", uri=True)
    try:
        integrity = connection.execute("PRAGMA integrity_check").fetchone()[0]
        problems = []
        documents = {}
        for document_id, recorded, actual in connection.execute(
            "SELECT d.document_id, d.chunk_count, (SELECT COUNT(*) FROM chunks c WHERE c.document_rowid = d.id) "
            "FROM documents d"
        ):
            documents[document_id] = actual
            if actual != recorded or actual == 0:
                problems.append(f"{document_id}: {actual} chunks stored, {recorded} recorded")
        orphans = connection.execute(
            "SELECT COUNT(*) FROM chunks WHERE document_rowid NOT IN (SELECT id FROM documents)").fetchone()[0]
        if orphans:
            problems.append(f"{orphans} chunks without a document")
        chunk_ids = {f"{document_id}#{position}" for document_id, position in connection.execute(
            "SELECT d.document_id, c.position FROM chunks c JOIN documents d ON d.id = c.document_rowid")}
    finally:
        connection.close()
    return integrity, documents, chunk_ids, problems


def recovered_index_sizes(data_dir: Path, knowledge_base_id: str) -> dict[str, int]:
    """Open the index the way the service does at start-up (snapshot, then catch-up) and count its entries."""
    manifest_path = data_dir / "kb" / knowledge_base_id / "index" / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    registry = IndexRegistry(catalog=Catalog(data_dir / "catalog.sqlite3"), root=data_dir / "kb",
                             dimension=manifest.get("dimension", 384), embedder_name=manifest.get("embedder", ""))
    index = registry.get(knowledge_base_id)
    return {name: len(index.retrievers[name]) for name in ("bm25", "dense")}


def test_kills_during_ingestion_and_deletes(tmp_path):
    rng = random.Random(SEED)
    data_dir = tmp_path / "data"
    service = ServiceProcess(data_dir, tmp_path / "service.log")
    attempted_deletes: set[str] = set()
    acknowledged_deletes: list[str] = []
    server_errors: list[str] = []
    job_ids: list[str] = []
    kills = {"ingestion": 0, "deletes": 0}

    try:
        service.start()
        with httpx.Client(base_url=service.url, timeout=30) as http:
            tenant = http.post("/v1/tenants", json={"name": "crash"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            headers = {"Authorization": f"Bearer {tenant.json()['api_key']}"}
            knowledge_base_id = http.post("/v1/knowledge-bases", json={"name": "crash"}, headers=headers).json()["id"]
            stable_job = post_ndjson(http, headers, stable_documents())
            assert wait_for_jobs(http, headers, [stable_job], timeout=300)[stable_job]["status"] == "succeeded"
        remaining = [document["id"] for document in stable_documents()]
        rng.shuffle(remaining)

        for cycle in range(KILLS):
            if cycle > 0:
                service.start()
            if cycle % 2 == 0:
                with httpx.Client(base_url=service.url, timeout=30) as http:
                    job_ids.append(post_ndjson(http, headers, churn_documents(cycle // 2 % CHURN_BATCHES, cycle)))
                time.sleep(rng.uniform(0.2, 4.0))
                kills["ingestion"] += 1
                service.kill()
            else:
                # Churn documents come back with the next upload, so deletes keep finding documents to remove.
                churn = [document["id"] for document in churn_documents(rng.randrange(CHURN_BATCHES), 0)]
                candidates = remaining[:6] + rng.sample(churn, 30)
                rng.shuffle(candidates)
                deleter = Deleter(service.url, headers, candidates)
                deleter.start()
                time.sleep(rng.uniform(0.05, 1.5))
                kills["deletes"] += 1
                service.kill()
                deleter.join(timeout=30)
                attempted_deletes.update(deleter.attempted)
                acknowledged_deletes.extend(deleter.acknowledged)
                server_errors.extend(deleter.server_errors)
                remaining = [document_id for document_id in remaining if document_id not in deleter.attempted]

        service.start()
        with httpx.Client(base_url=service.url, timeout=60) as http:
            jobs = wait_for_jobs(http, headers, job_ids, timeout=600)
            indexed = {retriever: indexed_chunk_ids(http, headers, retriever) for retriever in ("bm25", "dense")}
        service.kill()
    finally:
        service.kill()

    integrity, documents, catalog_chunk_ids, problems = catalog_state(data_dir / "catalog.sqlite3")
    sizes = recovered_index_sizes(data_dir, knowledge_base_id)
    print(f"\ncrash: {sum(kills.values())} kills ({kills['ingestion']} during ingestion, {kills['deletes']} during "
          f"deletes), {len(acknowledged_deletes)} deletes acknowledged of {len(attempted_deletes)} documents "
          f"targeted, {len(job_ids)} churn jobs, "
          f"{len(documents)} documents and {len(catalog_chunk_ids)} chunks at the end, index sizes {sizes}")

    assert sum(kills.values()) == KILLS
    assert server_errors == []
    assert integrity == "ok"
    assert problems == []
    for retriever, chunk_ids in indexed.items():
        assert chunk_ids == catalog_chunk_ids, (retriever, sorted(chunk_ids ^ catalog_chunk_ids)[:10])
    assert sizes == {"bm25": len(catalog_chunk_ids), "dense": len(catalog_chunk_ids)}

    assert all(job["status"] == "succeeded" for job in jobs.values()), [job["status"] for job in jobs.values()]
    stable_ids = {document["id"] for document in stable_documents()}
    churn_ids = {document["id"] for batch in range(CHURN_BATCHES) for document in churn_documents(batch, 0)}
    # A delete cut off by the kill may or may not have committed, but nothing else may be missing.
    assert (stable_ids | churn_ids) - set(documents) <= attempted_deletes
    # A churn document can be re-added by an upload after its delete; a stable one never is.
    assert not set(acknowledged_deletes) & stable_ids & set(documents)


def test_sigterm_stops_cleanly_and_job_resumes(tmp_path):
    data_dir = tmp_path / "data"
    service = ServiceProcess(data_dir, tmp_path / "service.log")
    documents = churn_documents(0, 1) + churn_documents(1, 1)
    try:
        service.start(log_level="INFO")
        with httpx.Client(base_url=service.url, timeout=30) as http:
            tenant = http.post("/v1/tenants", json={"name": "stop"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
            headers = {"Authorization": f"Bearer {tenant.json()['api_key']}"}
            http.post("/v1/knowledge-bases", json={"name": "crash"}, headers=headers).raise_for_status()
            job_id = post_ndjson(http, headers, documents)
            deadline = time.monotonic() + 120
            while http.get(f"/v1/jobs/{job_id}", headers=headers).json()["processed"] == 0:
                assert time.monotonic() < deadline, "the job processed nothing within 120 s"
                time.sleep(0.1)

        service.process.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal after its graceful shutdown, so the status is -SIGTERM, not 0.
        assert service.process.wait(timeout=90) in (0, -signal.SIGTERM), service.log_tail()
        messages = [json.loads(line)["message"] for line in service.log_path.read_text().splitlines()
                    if line.startswith("{")]
        stopping = messages.index("service stopping; finishing the document being ingested")
        assert "service stopped" in messages[stopping:]
        assert "Application shutdown complete." in messages[stopping:]

        integrity, stored, _, problems = catalog_state(data_dir / "catalog.sqlite3")
        assert integrity == "ok"
        assert problems == []
        print(f"\nsigterm: {len(stored)} of {len(documents)} documents stored before the stop")

        service.start()
        with httpx.Client(base_url=service.url, timeout=30) as http:
            job = wait_for_jobs(http, headers, [job_id], timeout=300)[job_id]
            listed = http.get("/v1/knowledge-bases/crash", headers=headers).json()
        assert job["status"] == "succeeded"
        assert listed["document_count"] == len(documents)
    finally:
        service.kill()
