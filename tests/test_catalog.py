"""The catalog on SQLite and on PostgreSQL: start-up migrations, job claims and the chunk log kept for replicas."""

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from storage.catalog import Catalog, NewChunk
from tests.conftest import BOTH_CATALOGS, make_settings

pytestmark = BOTH_CATALOGS


def open_catalog(data_dir: Path, database_url: str | None, replica: str = "replica-a") -> Catalog:
    return Catalog(make_settings(data_dir, database_url).catalog_location, replica=replica)


@pytest.fixture
def catalog(data_dir, database_url):
    opened = open_catalog(data_dir, database_url)
    yield opened
    opened.close()


def knowledge_base(catalog: Catalog) -> tuple[str, str]:
    tenant, _ = catalog.create_tenant(name=f"tenant-{time.monotonic_ns()}")
    created = catalog.create_knowledge_base(tenant_id=tenant.id, name="kb", chunk_size=64, chunk_overlap=8)
    return tenant.id, created.id


def add_document(catalog: Catalog, knowledge_base_id: str, document_id: str, chunks: int = 2) -> list[int]:
    _, added = catalog.replace_document(
        knowledge_base_id=knowledge_base_id, document_id=document_id, title=document_id, source="test",
        content_hash=document_id, metadata={"n": 1},
        chunks=[NewChunk(position=position, text=f"{document_id} {position}", metadata={},
                         embedding=np.full(4, position, dtype=np.float32)) for position in range(chunks)])
    return added


class TestSchema:
    def test_reopening_adds_missing_columns(self, data_dir, database_url, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        job = catalog.create_job(tenant_id=tenant_id, knowledge_base_id=knowledge_base_id, items=[{"raw": "x"}])
        # A catalog from before job claims: drop the columns this version added, then open it again.
        with catalog._transaction() as connection:
            for column in ("worker", "heartbeat_at", "started_at"):
                connection.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
        reopened = open_catalog(data_dir, database_url)
        try:
            claimed = reopened.claim_job(worker="w", lease_seconds=60)
            assert claimed is not None
            assert claimed.id == job.id
            assert claimed.worker == "w"
            assert claimed.started_at is None
        finally:
            reopened.close()

    def test_rows_round_trip(self, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        added = add_document(catalog, knowledge_base_id, "doc", chunks=3)
        rows = catalog.get_chunks(list(reversed(added)))
        assert [row.position for row in rows] == [2, 1, 0]
        assert rows[0].embedding.dtype == np.float32
        assert rows[0].embedding.tolist() == [2.0] * 4
        assert catalog.count_documents(knowledge_base_id) == (1, 3)
        assert catalog.knowledge_base_sizes() == [(knowledge_base_id, 1, 3)]
        assert catalog.get_document(knowledge_base_id=knowledge_base_id, document_id="doc").metadata == {"n": 1}
        assert catalog.delete_document(knowledge_base_id=knowledge_base_id, document_id="doc") == added
        assert catalog.delete_document(knowledge_base_id=knowledge_base_id, document_id="doc") is None
        assert [op for _, _, op in catalog.changes_since(knowledge_base_id, 0)] == ["add"] * 3 + ["delete"] * 3


class TestJobClaims:
    def test_each_job_once_oldest_first(self, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        jobs = []
        for _ in range(2):
            jobs.append(catalog.create_job(tenant_id=tenant_id, knowledge_base_id=knowledge_base_id, items=[]).id)
            time.sleep(0.005)  # creation times have millisecond resolution; jobs created in the same one tie
        first = catalog.claim_job(worker="a", lease_seconds=60)
        second = catalog.claim_job(worker="b", lease_seconds=60)
        assert [first.id, second.id] == jobs
        assert (first.status, first.worker, second.worker) == ("running", "a", "b")
        assert catalog.claim_job(worker="c", lease_seconds=60) is None

    def test_expired_lease_released_and_own_jobs_are_claimable(self, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        job = catalog.create_job(tenant_id=tenant_id, knowledge_base_id=knowledge_base_id, items=[])
        claimed = catalog.claim_job(worker="a", lease_seconds=60)
        assert catalog.heartbeat_job(job.id, "a")
        # Replica a restarted after a crash: its own running job is its to resume at once.
        assert catalog.claim_job(worker="a", lease_seconds=60).id == job.id
        # Another replica waits for the lease to run out.
        assert catalog.claim_job(worker="b", lease_seconds=60) is None
        time.sleep(0.05)
        taken = catalog.claim_job(worker="b", lease_seconds=0.01)
        assert taken.id == job.id
        assert taken.worker == "b"
        # The first worker has lost it, so its heartbeat and its progress writes are rejected.
        assert not catalog.heartbeat_job(job.id, "a")
        claimed.processed = 99
        assert not catalog.update_job(claimed)
        assert catalog.get_job(job.id).processed == 0
        # A stopping replica hands the job back; any replica resumes it at once.
        catalog.release_job(job.id, "b")
        assert catalog.claim_job(worker="c", lease_seconds=60).worker == "c"

    def test_concurrent_claims_from_separate_connections(self, data_dir, database_url, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        created = {catalog.create_job(tenant_id=tenant_id, knowledge_base_id=knowledge_base_id, items=[]).id
                   for _ in range(30)}
        claims: dict[str, list[str]] = {}
        lock = threading.Lock()

        def worker(name: str) -> None:
            own = open_catalog(data_dir, database_url, replica=name)  # a catalog of its own, like a replica
            try:
                while (job := own.claim_job(worker=name, lease_seconds=60)) is not None:
                    with lock:
                        claims.setdefault(job.id, []).append(name)
                    job.status = "succeeded"  # finished, or its own worker would claim it again
                    assert own.update_job(job)
            finally:
                own.close()

        threads = [threading.Thread(target=worker, args=(f"w{number}",)) for number in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert set(claims) == created
        assert all(len(workers) == 1 for workers in claims.values()), claims


class TestChunkLog:
    def test_log_kept_until_every_replica_has_read_it(self, data_dir, database_url, catalog):
        _, knowledge_base_id = knowledge_base(catalog)
        other = open_catalog(data_dir, database_url, replica="replica-b")
        try:
            assert other.changes_since(knowledge_base_id, 0) == []  # replica b's indices start at 0
            add_document(catalog, knowledge_base_id, "one")
            last = catalog.last_sequence(knowledge_base_id)
            catalog.prune_log(knowledge_base_id, last)  # replica a saved a snapshot covering everything
            remaining = other.changes_since(knowledge_base_id, 0)
            if database_url is None:
                assert remaining == []  # SQLite serves one replica: its snapshot alone decides
            else:
                assert [op for _, _, op in remaining] == ["add", "add"]
                other.prune_log(knowledge_base_id, last)
                assert other.changes_since(knowledge_base_id, 0) == []
        finally:
            other.close()


class TestKnowledgeBaseDeletion:
    def test_returns_deleted_aliases(self, catalog):
        tenant_id, knowledge_base_id = knowledge_base(catalog)
        other = catalog.create_knowledge_base(tenant_id=tenant_id, name="other", chunk_size=64, chunk_overlap=8)
        catalog.set_alias(tenant_id=tenant_id, name="live", knowledge_base_id=knowledge_base_id)
        catalog.set_alias(tenant_id=tenant_id, name="canary", knowledge_base_id=knowledge_base_id)
        catalog.set_alias(tenant_id=tenant_id, name="next", knowledge_base_id=other.id)

        assert catalog.delete_knowledge_base(knowledge_base_id) == ["canary", "live"]
        assert [row["name"] for row in catalog.list_aliases(tenant_id=tenant_id)] == ["next"]
        assert catalog.get_knowledge_base(knowledge_base_id) is None

    def test_without_aliases_returns_empty_list(self, catalog):
        _, knowledge_base_id = knowledge_base(catalog)
        add_document(catalog, knowledge_base_id, "doc")
        assert catalog.delete_knowledge_base(knowledge_base_id) == []
        assert catalog.changes_since(knowledge_base_id, 0) == []
