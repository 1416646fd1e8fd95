"""SQLite catalog: the source of truth for tenants, keys, knowledge bases, documents, chunks and jobs.

Every index is derived from the rows here. Each change to a knowledge base's chunks is appended to
`chunk_log`, so an index snapshot that records the last sequence number it covers can catch up.
"""

import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    prefix TEXT NOT NULL,
    salt BLOB NOT NULL,
    hash BLOB NOT NULL,
    role TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys(prefix);
CREATE TABLE IF NOT EXISTS knowledge_bases (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    chunk_overlap INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    generator TEXT,
    UNIQUE (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS aliases (
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    knowledge_base_id TEXT NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    knowledge_base_id TEXT NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    document_id TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (knowledge_base_id, document_id)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    knowledge_base_id TEXT NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    document_rowid INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_rowid);
CREATE INDEX IF NOT EXISTS chunks_knowledge_base ON chunks(knowledge_base_id, id);
CREATE TABLE IF NOT EXISTS chunk_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    knowledge_base_id TEXT NOT NULL,
    chunk_rowid INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete'))
);
CREATE INDEX IF NOT EXISTS chunk_log_knowledge_base ON chunk_log(knowledge_base_id, seq);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    knowledge_base_id TEXT NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    status TEXT NOT NULL,
    total INTEGER NOT NULL DEFAULT 0,
    processed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    unchanged INTEGER NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    items TEXT NOT NULL,
    options TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    documents_per_second REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
"""

KEY_PREFIX_LENGTH = 12
# A read-only key may search and query; a read-write key may also change data and manage its tenant's keys.
KEY_ROLES = ("read-only", "read-write")
# A job keeps at most this many per-item errors so that a bad bulk upload cannot grow one row without bound.
MAX_JOB_ERRORS = 1000


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: str


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant_id: str
    prefix: str
    role: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class KnowledgeBase:
    id: str
    tenant_id: str
    name: str
    chunk_size: int
    chunk_overlap: int
    created_at: str
    generator: str | None = None  # backbone name; None means the service default
    backend: str = "local"  # index backend of bm25 and dense: "local" or "milvus"


@dataclass(frozen=True)
class Document:
    rowid: int
    knowledge_base_id: str
    document_id: str
    title: str
    source: str
    content_hash: str
    metadata: dict[str, Any]
    chunk_count: int
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class ChunkRow:
    """A stored chunk with what the indices need: the title is indexed together with the text."""

    rowid: int
    document_id: str
    position: int
    title: str
    text: str
    metadata: dict[str, Any]
    embedding: np.ndarray


@dataclass(frozen=True)
class NewChunk:
    position: int
    text: str
    metadata: dict[str, Any]
    embedding: np.ndarray


@dataclass
class Job:
    id: str
    tenant_id: str
    knowledge_base_id: str
    status: str
    total: int
    processed: int
    failed: int
    unchanged: int
    errors: list[dict[str, Any]]
    items: list[dict[str, Any]]
    options: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    documents_per_second: float = 0.0


class Catalog:
    """Thread-safe access to the catalog database; one connection per thread, one writer at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        with self._write_lock:
            self._connection().executescript(SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Add columns that later versions introduced to a catalog created before them."""
        connection = self._connection()
        columns = {row["name"] for row in connection.execute("PRAGMA table_info(jobs)")}
        if "started_at" not in columns:
            connection.execute("ALTER TABLE jobs ADD COLUMN started_at TEXT")
        if "documents_per_second" not in columns:
            connection.execute("ALTER TABLE jobs ADD COLUMN documents_per_second REAL NOT NULL DEFAULT 0")
        columns = {row["name"] for row in connection.execute("PRAGMA table_info(knowledge_bases)")}
        if "generator" not in columns:
            connection.execute("ALTER TABLE knowledge_bases ADD COLUMN generator TEXT")
        # The index backend of the knowledge base's bm25 and dense retrievers: "local" or "milvus".
        if "backend" not in columns:
            connection.execute("ALTER TABLE knowledge_bases ADD COLUMN backend TEXT NOT NULL DEFAULT 'local'")

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            # FULL fsyncs the WAL on every commit, so an acknowledged write survives a power loss.
            connection.execute("PRAGMA synchronous=FULL")
            connection.execute("PRAGMA foreign_keys=ON")
            self._local.connection = connection
        return connection

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        with self._write_lock:
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _query(self, sql: str, parameters: tuple = ()) -> list[sqlite3.Row]:
        return self._connection().execute(sql, parameters).fetchall()

    def _query_one(self, sql: str, parameters: tuple = ()) -> sqlite3.Row | None:
        return self._connection().execute(sql, parameters).fetchone()

    # Tenants and keys

    def create_tenant(self, *, name: str, role: str = "read-write") -> tuple[Tenant, str]:
        """Create a tenant with its first API key; the key itself is returned here and never stored."""
        tenant = Tenant(id=f"tnt_{uuid.uuid4().hex[:20]}", name=name, created_at=utc_now())
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
                (tenant.id, tenant.name, tenant.created_at),
            )
            _, key = self._insert_key(connection, tenant_id=tenant.id, role=role)
        return tenant, key

    def create_api_key(self, *, tenant_id: str, role: str) -> tuple[ApiKey, str]:
        """Create another key for a tenant; returns its record and the key itself, which is not stored."""
        with self._transaction() as connection:
            return self._insert_key(connection, tenant_id=tenant_id, role=role)

    def _insert_key(self, connection: sqlite3.Connection, *, tenant_id: str, role: str) -> tuple[ApiKey, str]:
        if role not in KEY_ROLES:
            raise ValueError(f"invalid key role {role!r}; use one of {KEY_ROLES}")
        key = "drk_" + secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = ApiKey(id=f"key_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, prefix=key[:KEY_PREFIX_LENGTH],
                        role=role, created_at=utc_now(), revoked_at=None)
        connection.execute(
            "INSERT INTO api_keys (id, tenant_id, prefix, salt, hash, role, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.id, tenant_id, record.prefix, salt, _hash_key(key, salt), role, record.created_at),
        )
        return record, key

    def list_api_keys(self, *, tenant_id: str) -> list[ApiKey]:
        """List a tenant's keys, revoked ones included, oldest first; only prefixes, never hashes."""
        rows = self._query(
            "SELECT id, tenant_id, prefix, role, created_at, revoked_at FROM api_keys WHERE tenant_id = ? "
            "ORDER BY created_at, id",
            (tenant_id,),
        )
        return [ApiKey(**dict(row)) for row in rows]

    def revoke_api_key(self, *, tenant_id: str, key_id: str) -> ApiKey | None:
        """Revoke a tenant's key; revoking it again keeps the first time. None when the tenant has no such key."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE tenant_id = ? AND id = ? AND revoked_at IS NULL",
                (utc_now(), tenant_id, key_id),
            )
            row = connection.execute(
                "SELECT id, tenant_id, prefix, role, created_at, revoked_at FROM api_keys "
                "WHERE tenant_id = ? AND id = ?",
                (tenant_id, key_id),
            ).fetchone()
        return ApiKey(**dict(row)) if row else None

    def authenticate(self, key: str) -> tuple[Tenant, ApiKey] | None:
        """Return the tenant and key record for a presented key, or None when it matches no live key."""
        rows = self._query(
            "SELECT k.*, t.name AS tenant_name, t.created_at AS tenant_created_at FROM api_keys k "
            "JOIN tenants t ON t.id = k.tenant_id WHERE k.prefix = ? AND k.revoked_at IS NULL",
            (key[:KEY_PREFIX_LENGTH],),
        )
        for row in rows:
            # Random 256-bit keys need no slow hash; compare_digest keeps the comparison constant-time.
            if hmac.compare_digest(_hash_key(key, row["salt"]), row["hash"]):
                tenant = Tenant(id=row["tenant_id"], name=row["tenant_name"], created_at=row["tenant_created_at"])
                api_key = ApiKey(id=row["id"], tenant_id=row["tenant_id"], prefix=row["prefix"], role=row["role"],
                                 created_at=row["created_at"], revoked_at=row["revoked_at"])
                return tenant, api_key
        return None

    def get_tenant_by_name(self, name: str) -> Tenant | None:
        row = self._query_one("SELECT * FROM tenants WHERE name = ?", (name,))
        return Tenant(**dict(row)) if row else None

    def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self._query_one("SELECT * FROM tenants WHERE id = ?", (tenant_id,))
        return Tenant(**dict(row)) if row else None

    def list_tenants(self) -> list[Tenant]:
        return [Tenant(**dict(row)) for row in self._query("SELECT * FROM tenants ORDER BY created_at, id")]

    # Knowledge bases and aliases

    def create_knowledge_base(self, *, tenant_id: str, name: str, chunk_size: int, chunk_overlap: int,
                              generator: str | None = None, backend: str = "local") -> KnowledgeBase:
        knowledge_base = KnowledgeBase(id=f"kb_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, name=name,
                                       chunk_size=chunk_size, chunk_overlap=chunk_overlap, created_at=utc_now(),
                                       generator=generator, backend=backend)
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO knowledge_bases (id, tenant_id, name, chunk_size, chunk_overlap, created_at, generator, "
                "backend) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (knowledge_base.id, tenant_id, name, chunk_size, chunk_overlap, knowledge_base.created_at,
                 generator, backend),
            )
        return knowledge_base

    def list_knowledge_bases(self, *, tenant_id: str) -> list[KnowledgeBase]:
        rows = self._query("SELECT * FROM knowledge_bases WHERE tenant_id = ? ORDER BY created_at, id", (tenant_id,))
        return [KnowledgeBase(**dict(row)) for row in rows]

    def all_knowledge_bases(self) -> list[KnowledgeBase]:
        return [KnowledgeBase(**dict(row)) for row in self._query("SELECT * FROM knowledge_bases")]

    def resolve_knowledge_base(self, *, tenant_id: str, reference: str) -> KnowledgeBase | None:
        """Find a tenant's knowledge base by id, then by name, then by alias; None when none matches."""
        row = self._query_one(
            "SELECT * FROM knowledge_bases WHERE tenant_id = ? AND (id = ? OR name = ?) "
            "ORDER BY id = ? DESC LIMIT 1",
            (tenant_id, reference, reference, reference),
        )
        if row is None:
            row = self._query_one(
                "SELECT kb.* FROM aliases a JOIN knowledge_bases kb ON kb.id = a.knowledge_base_id "
                "WHERE a.tenant_id = ? AND a.name = ?",
                (tenant_id, reference),
            )
        return KnowledgeBase(**dict(row)) if row else None

    def set_knowledge_base_backend(self, knowledge_base_id: str, backend: str) -> None:
        with self._transaction() as connection:
            connection.execute("UPDATE knowledge_bases SET backend = ? WHERE id = ?", (backend, knowledge_base_id))

    def delete_knowledge_base(self, knowledge_base_id: str) -> None:
        with self._transaction() as connection:
            connection.execute("DELETE FROM chunk_log WHERE knowledge_base_id = ?", (knowledge_base_id,))
            connection.execute("DELETE FROM knowledge_bases WHERE id = ?", (knowledge_base_id,))

    def set_alias(self, *, tenant_id: str, name: str, knowledge_base_id: str) -> str:
        updated_at = utc_now()
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO aliases (tenant_id, name, knowledge_base_id, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (tenant_id, name) DO UPDATE SET knowledge_base_id = excluded.knowledge_base_id, "
                "updated_at = excluded.updated_at",
                (tenant_id, name, knowledge_base_id, updated_at),
            )
        return updated_at

    def list_aliases(self, *, tenant_id: str) -> list[dict[str, str]]:
        rows = self._query(
            "SELECT a.name, a.knowledge_base_id, kb.name AS knowledge_base_name, a.updated_at FROM aliases a "
            "JOIN knowledge_bases kb ON kb.id = a.knowledge_base_id WHERE a.tenant_id = ? ORDER BY a.name",
            (tenant_id,),
        )
        return [dict(row) for row in rows]

    def delete_alias(self, *, tenant_id: str, name: str) -> bool:
        with self._transaction() as connection:
            cursor = connection.execute("DELETE FROM aliases WHERE tenant_id = ? AND name = ?", (tenant_id, name))
        return cursor.rowcount > 0

    def knowledge_base_sizes(self) -> list[tuple[str, int, int]]:
        """Return (knowledge base id, documents, chunks) for every knowledge base, for the metrics endpoint."""
        rows = self._query(
            "SELECT kb.id, COUNT(d.id) AS documents, COALESCE(SUM(d.chunk_count), 0) AS chunks "
            "FROM knowledge_bases kb LEFT JOIN documents d ON d.knowledge_base_id = kb.id GROUP BY kb.id ORDER BY kb.id"
        )
        return [(row["id"], row["documents"], row["chunks"]) for row in rows]

    def count_documents(self, knowledge_base_id: str) -> tuple[int, int]:
        row = self._query_one(
            "SELECT COUNT(*) AS documents, COALESCE(SUM(chunk_count), 0) AS chunks FROM documents "
            "WHERE knowledge_base_id = ?",
            (knowledge_base_id,),
        )
        return row["documents"], row["chunks"]

    # Documents and chunks

    def get_document(self, *, knowledge_base_id: str, document_id: str) -> Document | None:
        row = self._query_one(
            "SELECT * FROM documents WHERE knowledge_base_id = ? AND document_id = ?",
            (knowledge_base_id, document_id),
        )
        return _document(row) if row else None

    def list_documents(self, *, knowledge_base_id: str, offset: int, limit: int) -> list[Document]:
        rows = self._query(
            "SELECT * FROM documents WHERE knowledge_base_id = ? ORDER BY id LIMIT ? OFFSET ?",
            (knowledge_base_id, limit, offset),
        )
        return [_document(row) for row in rows]

    def replace_document(self, *, knowledge_base_id: str, document_id: str, title: str, source: str,
                         content_hash: str, metadata: dict[str, Any], chunks: list[NewChunk]) -> tuple[list[int], list[int]]:
        """Insert or replace a document and its chunks in one transaction.

        Returns the rowids of the chunks removed and of those added, in the order of `chunks`.
        """
        now = utc_now()
        with self._transaction() as connection:
            removed = self._delete_document_rows(connection, knowledge_base_id=knowledge_base_id,
                                                 document_id=document_id)
            cursor = connection.execute(
                "INSERT INTO documents (knowledge_base_id, document_id, title, source, content_hash, metadata, "
                "chunk_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (knowledge_base_id, document_id, title, source, content_hash, json.dumps(metadata), len(chunks),
                 now, now),
            )
            document_rowid = cursor.lastrowid
            added = []
            for chunk in chunks:
                cursor = connection.execute(
                    "INSERT INTO chunks (knowledge_base_id, document_rowid, position, text, metadata, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (knowledge_base_id, document_rowid, chunk.position, chunk.text, json.dumps(chunk.metadata),
                     np.ascontiguousarray(chunk.embedding, dtype=np.float32).tobytes()),
                )
                added.append(cursor.lastrowid)
            connection.executemany(
                "INSERT INTO chunk_log (knowledge_base_id, chunk_rowid, op) VALUES (?, ?, 'add')",
                [(knowledge_base_id, rowid) for rowid in added],
            )
        return removed, added

    def delete_document(self, *, knowledge_base_id: str, document_id: str) -> list[int] | None:
        """Delete a document; returns its chunk rowids, or None when the document does not exist."""
        with self._transaction() as connection:
            exists = connection.execute(
                "SELECT 1 FROM documents WHERE knowledge_base_id = ? AND document_id = ?",
                (knowledge_base_id, document_id),
            ).fetchone()
            if exists is None:
                return None
            return self._delete_document_rows(connection, knowledge_base_id=knowledge_base_id,
                                              document_id=document_id)

    def _delete_document_rows(self, connection: sqlite3.Connection, *, knowledge_base_id: str,
                              document_id: str) -> list[int]:
        rows = connection.execute(
            "SELECT c.id FROM chunks c JOIN documents d ON d.id = c.document_rowid "
            "WHERE d.knowledge_base_id = ? AND d.document_id = ?",
            (knowledge_base_id, document_id),
        ).fetchall()
        removed = [row["id"] for row in rows]
        connection.execute("DELETE FROM documents WHERE knowledge_base_id = ? AND document_id = ?",
                           (knowledge_base_id, document_id))
        connection.executemany(
            "INSERT INTO chunk_log (knowledge_base_id, chunk_rowid, op) VALUES (?, ?, 'delete')",
            [(knowledge_base_id, rowid) for rowid in removed],
        )
        return removed

    def get_chunks(self, rowids: list[int]) -> list[ChunkRow]:
        """Fetch chunks by rowid, in the order given; rowids that no longer exist are skipped."""
        found: dict[int, ChunkRow] = {}
        # SQLite limits bound parameters per statement (32766 since 3.32); 900 stays well below any build's limit.
        for start in range(0, len(rowids), 900):
            batch = rowids[start:start + 900]
            placeholders = ",".join("?" * len(batch))
            for row in self._query(
                "SELECT c.id, c.position, c.text, c.metadata, c.embedding, d.document_id, d.title FROM chunks c "
                f"JOIN documents d ON d.id = c.document_rowid WHERE c.id IN ({placeholders})",
                tuple(batch),
            ):
                found[row["id"]] = _chunk(row)
        return [found[rowid] for rowid in rowids if rowid in found]

    def iter_chunks(self, knowledge_base_id: str, batch_size: int = 5000) -> Iterator[list[ChunkRow]]:
        """Yield every chunk of a knowledge base in rowid order, in batches."""
        last = 0
        while True:
            rows = self._query(
                "SELECT c.id, c.position, c.text, c.metadata, c.embedding, d.document_id, d.title FROM chunks c "
                "JOIN documents d ON d.id = c.document_rowid WHERE c.knowledge_base_id = ? AND c.id > ? "
                "ORDER BY c.id LIMIT ?",
                (knowledge_base_id, last, batch_size),
            )
            if not rows:
                return
            yield [_chunk(row) for row in rows]
            last = rows[-1]["id"]

    def last_sequence(self, knowledge_base_id: str) -> int:
        row = self._query_one("SELECT MAX(seq) AS seq FROM chunk_log WHERE knowledge_base_id = ?",
                              (knowledge_base_id,))
        return row["seq"] or 0

    def changes_since(self, knowledge_base_id: str, sequence: int) -> list[tuple[int, int, str]]:
        rows = self._query(
            "SELECT seq, chunk_rowid, op FROM chunk_log WHERE knowledge_base_id = ? AND seq > ? ORDER BY seq",
            (knowledge_base_id, sequence),
        )
        return [(row["seq"], row["chunk_rowid"], row["op"]) for row in rows]

    def prune_log(self, knowledge_base_id: str, through_sequence: int) -> None:
        """Drop log entries that a saved snapshot already covers."""
        with self._transaction() as connection:
            connection.execute("DELETE FROM chunk_log WHERE knowledge_base_id = ? AND seq <= ?",
                               (knowledge_base_id, through_sequence))

    # Jobs

    def create_job(self, *, tenant_id: str, knowledge_base_id: str, items: list[dict[str, Any]],
                   options: dict[str, Any] | None = None) -> Job:
        now = utc_now()
        job = Job(id=f"job_{uuid.uuid4().hex[:20]}", tenant_id=tenant_id, knowledge_base_id=knowledge_base_id,
                  status="queued", total=0, processed=0, failed=0, unchanged=0, errors=[], items=items,
                  options=options or {}, created_at=now, updated_at=now)
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO jobs (id, tenant_id, knowledge_base_id, status, items, options, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, tenant_id, knowledge_base_id, job.status, json.dumps(items), json.dumps(job.options),
                 now, now),
            )
        return job

    def get_job(self, job_id: str) -> Job | None:
        row = self._query_one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    def job_totals(self) -> list[dict[str, Any]]:
        """Sum the jobs the catalog holds by status: job count and documents processed, failed and unchanged."""
        rows = self._query(
            "SELECT status, COUNT(*) AS jobs, COALESCE(SUM(processed), 0) AS processed, "
            "COALESCE(SUM(failed), 0) AS failed, COALESCE(SUM(unchanged), 0) AS unchanged FROM jobs GROUP BY status"
        )
        return [dict(row) for row in rows]

    def unfinished_jobs(self) -> list[Job]:
        rows = self._query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at")
        return [_job(row) for row in rows]

    def update_job(self, job: Job) -> None:
        job.updated_at = utc_now()
        with self._transaction() as connection:
            connection.execute(
                "UPDATE jobs SET status = ?, total = ?, processed = ?, failed = ?, unchanged = ?, errors = ?, "
                "updated_at = ?, started_at = ?, documents_per_second = ? WHERE id = ?",
                (job.status, job.total, job.processed, job.failed, job.unchanged,
                 json.dumps(job.errors[:MAX_JOB_ERRORS]), job.updated_at, job.started_at,
                 job.documents_per_second, job.id),
            )


def _hash_key(key: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + key.encode("utf-8")).digest()


def _document(row: sqlite3.Row) -> Document:
    values = dict(row)
    values["rowid"] = values.pop("id")
    values["metadata"] = json.loads(values["metadata"])
    return Document(**values)


def _chunk(row: sqlite3.Row) -> ChunkRow:
    return ChunkRow(rowid=row["id"], document_id=row["document_id"], position=row["position"], title=row["title"],
                    text=row["text"], metadata=json.loads(row["metadata"]),
                    embedding=np.frombuffer(row["embedding"], dtype=np.float32))


def _job(row: sqlite3.Row) -> Job:
    values = dict(row)
    values["errors"] = json.loads(values["errors"])
    values["items"] = json.loads(values["items"])
    values["options"] = json.loads(values["options"])
    return Job(**values)
