"""SIGKILL during a bulk job: after a restart every document is fully indexed or absent, and the job finishes.

Runs `domainrag serve` as a child process with the real all-MiniLM-L6-v2 embedder on a loopback port.
"""

import json
import os
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ADMIN_KEY = "restart-test-admin-key"
DOCUMENTS = 120
KB = "bulk"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def code_word(number: int) -> str:
    """Spell a number in letters, so each document has one BM25 term that no other document has."""
    letters = string.ascii_lowercase
    return "zq" + "".join(letters[int(digit)] for digit in f"{number:04d}") + "x"


def bulk_documents() -> list[dict]:
    return [{"id": f"doc-{number}", "title": f"Record {number}",
             "text": f"Record {code_word(number)} describes sample {number} taken from the river delta."}
            for number in range(DOCUMENTS)]


class Service:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        environment = {**os.environ, "DOMAINRAG_DATA_DIR": str(self.data_dir), "DOMAINRAG_ADMIN_KEY": ADMIN_KEY,
                       "DOMAINRAG_GENERATOR": "extractive", "HF_HUB_OFFLINE": "1"}
        command = [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), "--log-level", "WARNING"]
        self.process = subprocess.Popen(command, env=environment, cwd=Path(__file__).resolve().parent.parent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"the service exited with status {self.process.returncode}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the service did not start within 60 s")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    running = Service(tmp_path / "data")
    yield running
    running.stop()


def catalog_counts(data_dir: Path) -> dict[str, tuple[int, int]]:
    """Return each document's recorded chunk count and the chunk rows that really exist, read from SQLite."""
    connection = sqlite3.connect(data_dir / "catalog.sqlite3")
    try:
        rows = connection.execute(
            "SELECT d.document_id, d.chunk_count, COUNT(c.id) FROM documents d "
            "LEFT JOIN chunks c ON c.document_rowid = d.id GROUP BY d.id").fetchall()
    finally:
        connection.close()
    return {document_id: (recorded, stored) for document_id, recorded, stored in rows}


def wait_for(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def test_sigkill_mid_job_then_restart(service):
    service.start()
    tenant = httpx.post(f"{service.url}/v1/tenants", json={"name": "restart"},
                        headers={"Authorization": f"Bearer {ADMIN_KEY}"}).json()
    headers = {"Authorization": f"Bearer {tenant['api_key']}"}
    httpx.post(f"{service.url}/v1/knowledge-bases", json={"name": KB}, headers=headers).raise_for_status()
    body = "\n".join(json.dumps(document) for document in bulk_documents()).encode()
    response = httpx.post(f"{service.url}/v1/knowledge-bases/{KB}/documents", content=body,
                          headers={**headers, "Content-Type": "application/x-ndjson"})
    job_id = response.json()["job_id"]

    def job() -> dict:
        return httpx.get(f"{service.url}/v1/jobs/{job_id}", headers=headers, timeout=10).json()

    wait_for(lambda: job()["processed"] >= 32, timeout=60)
    service.kill()

    counts = catalog_counts(service.data_dir)
    assert 0 < len(counts) < DOCUMENTS
    for document_id, (recorded, stored) in counts.items():
        assert recorded == stored, document_id

    service.start()
    finished = wait_for(lambda: (current := job())["status"] not in ("queued", "running") and current, timeout=60,
                        interval=0.5)
    assert finished["status"] == "succeeded"
    assert finished["processed"] == DOCUMENTS
    assert finished["unchanged"] >= len(counts)

    counts = catalog_counts(service.data_dir)
    assert len(counts) == DOCUMENTS
    for number in range(DOCUMENTS):
        document_id = f"doc-{number}"
        recorded, stored = counts[document_id]
        assert recorded == stored == 1, document_id
        hits = httpx.post(f"{service.url}/v1/knowledge-bases/{KB}/search", headers=headers, timeout=30,
                          json={"query": code_word(number), "retrievers": ["bm25"], "top_k": 5}).json()["hits"]
        assert [hit["document_id"] for hit in hits] == [document_id]
    for number in range(0, DOCUMENTS, 20):
        text = bulk_documents()[number]["text"]
        hits = httpx.post(f"{service.url}/v1/knowledge-bases/{KB}/search", headers=headers, timeout=30,
                          json={"query": text, "retrievers": ["dense"], "top_k": 1}).json()["hits"]
        assert hits[0]["document_id"] == f"doc-{number}"
