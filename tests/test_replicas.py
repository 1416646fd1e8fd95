"""Two `domainrag serve` processes sharing one PostgreSQL catalog and one data directory.

Both replicas start at once (so their start-up migrations race), then two bulk jobs are queued through replica A.
A claims the first at once; the second waits in the catalog until B's worker, polling it, claims it. Each job must
be started exactly once across both replicas, and every document uploaded through A is listed and found through B
(and the other way round for B's job).

What the replicas share: the catalog (tenants, keys, documents, chunks with their embeddings, jobs, chunk_log)
and the data directory, because an upload is stored under DATA_DIR/kb/<id>/raw by the replica that receives it
and read by whichever replica claims its job. Each replica keeps its own in-memory BM25, dense and graph indices;
a replica opening a knowledge base loads the last snapshot in the shared directory and catches up from chunk_log.
"""

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN_KEY, TEST_DATABASE_URL, ServiceProcess, postgresql_schema

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not TEST_DATABASE_URL, reason="two replicas need a shared PostgreSQL catalog: set "
                       "DOMAINRAG_TEST_DATABASE_URL=postgresql://... (`bash .ci/run` starts a server and sets it)"),
]

SERVICE_PORTS = range(8230, 8240)
FIRST_DOCUMENTS = 120  # keeps replica A busy for longer than B's 0.2 s between looks at the catalog
SECOND_DOCUMENTS = 30


def free_service_port(taken: set[int]) -> int:
    for port in SERVICE_PORTS:
        if port in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {SERVICE_PORTS.start}-{SERVICE_PORTS.stop - 1} for a test replica")


def make_replica(name: str, port: int, data_dir: Path, database_url: str, log_path: Path) -> ServiceProcess:
    return ServiceProcess(data_dir, log_path, name=name, port=port,
                          environment={"DOMAINRAG_DATABASE_URL": database_url, "DOMAINRAG_REPLICA_ID": name,
                                       "DOMAINRAG_JOB_POLL_INTERVAL_S": "0.2"})


def log_entries(replica: ServiceProcess) -> list[dict]:
    entries = []
    for line in replica.log_path.read_text(errors="replace").splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue
    return entries


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    data_dir = tmp_path / "data"
    with postgresql_schema() as database_url:
        first = free_service_port(set())
        second = free_service_port({first})
        pair = (make_replica("replica-a", first, data_dir, database_url, tmp_path / "a.log"),
                make_replica("replica-b", second, data_dir, database_url, tmp_path / "b.log"))
        try:
            for process in pair:  # both start together, so their schema migrations run concurrently
                process.launch(log_level="INFO")
            for process in pair:
                process.wait_ready()
            yield pair
        finally:
            codes = [process.stop() for process in pair]
        # uvicorn exits with the signal's status after a graceful shutdown on SIGTERM (or with 0).
        assert all(code in (0, -signal.SIGTERM) for code in codes), \
            f"replicas exited with {codes}; logs:\n{pair[0].log_tail()}\n{pair[1].log_tail()}"


def documents(prefix: str, count: int) -> list[dict]:
    return [{"id": f"{prefix}-{number}", "title": f"{prefix} record {number}",
             "text": f"Sample {prefix} {number} was taken at station {number % 17} and measured "
                     f"code{prefix}{number:04d}x in the river delta."}
            for number in range(count)]


def upload(http: httpx.Client, headers: dict, kb: str, items: list[dict]) -> str:
    response = http.post(f"/v1/knowledge-bases/{kb}/documents", headers={**headers, "Content-Type": "application/x-ndjson"},
                         content="\n".join(json.dumps(item) for item in items).encode())
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def wait_finished(http: httpx.Client, headers: dict, job_id: str, timeout: float = 300.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job['status']} after {timeout:.0f} s")


def listed_ids(http: httpx.Client, headers: dict, kb: str) -> list[str]:
    ids, offset = [], 0
    while True:
        page = http.get(f"/v1/knowledge-bases/{kb}/documents", headers=headers,
                        params={"offset": offset, "limit": 1000}).json()
        ids += [document["document_id"] for document in page["data"]]
        offset += page["count"]
        if offset >= page["total"] or not page["data"]:
            return ids


def top_document(http: httpx.Client, headers: dict, kb: str, query: str, retriever: str) -> str:
    response = http.post(f"/v1/knowledge-bases/{kb}/search", headers=headers,
                         json={"query": query, "retrievers": [retriever], "top_k": 1})
    assert response.status_code == 200, response.text
    return response.json()["hits"][0]["document_id"]


def test_two_replicas_share_one_catalog(replicas):
    a, b = replicas
    with httpx.Client(base_url=a.url, timeout=30) as via_a, httpx.Client(base_url=b.url, timeout=30) as via_b:
        created = via_a.post("/v1/tenants", json={"name": "replicated"}, headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert created.status_code == 201, created.text
        headers = {"Authorization": f"Bearer {created.json()['api_key']}"}
        # A key and knowledge bases created through one replica work through the other.
        for name in ("first", "second"):
            assert via_b.post("/v1/knowledge-bases", json={"name": name}, headers=headers).status_code == 201

        first_job = upload(via_a, headers, "first", documents("first", FIRST_DOCUMENTS))
        second_job = upload(via_a, headers, "second", documents("second", SECOND_DOCUMENTS))

        for job_id, count in ((first_job, FIRST_DOCUMENTS), (second_job, SECOND_DOCUMENTS)):
            job = wait_finished(via_b, headers, job_id)
            assert (job["status"], job["processed"], job["failed"], job["unchanged"]) == ("succeeded", count, 0, 0), job

        # Exactly once: across both replicas' logs, each job was started once and never resumed or re-run.
        runs: dict[str, list[str]] = {first_job: [], second_job: []}
        for process in (a, b):
            for entry in log_entries(process):
                if entry.get("message") in ("job started", "job resumed") and entry.get("job") in runs:
                    runs[entry["job"]].append(f"{entry['message']} on {entry.get('replica')}")
        assert runs[first_job] == ["job started on replica-a"], runs
        # The second job was queued through A while A ran the first; B found it in the catalog and ran it.
        assert runs[second_job] == ["job started on replica-b"], runs

        # Everything uploaded through A is listed and searchable through B, and B's job through A.
        assert sorted(listed_ids(via_b, headers, "first")) == sorted(d["id"] for d in documents("first", FIRST_DOCUMENTS))
        assert sorted(listed_ids(via_a, headers, "second")) == sorted(d["id"] for d in documents("second", SECOND_DOCUMENTS))
        for number in (0, FIRST_DOCUMENTS // 2, FIRST_DOCUMENTS - 1):
            assert top_document(via_b, headers, "first", f"codefirst{number:04d}x", "bm25") == f"first-{number}"
        for number in (0, SECOND_DOCUMENTS - 1):
            assert top_document(via_a, headers, "second", f"codesecond{number:04d}x", "bm25") == f"second-{number}"

        # A delete through one replica is seen by the other's listing at once.
        assert via_b.delete("/v1/knowledge-bases/first/documents/first-0", headers=headers).status_code == 204
        assert via_a.get("/v1/knowledge-bases/first/documents/first-0", headers=headers).status_code == 404
