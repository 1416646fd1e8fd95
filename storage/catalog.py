"""The catalog: the source of truth for tenants, keys, knowledge bases, documents, chunks and jobs.

It lives in SQLite (the embedded default) or PostgreSQL (for several service replicas), chosen by the
location given to `Catalog`: a path or `sqlite:///...` URL, or a `postgresql://...` URL. Both run the same
queries and schema through a small dialect layer (`_SQLite`, `_PostgreSQL`).

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
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

try:
    import psycopg
    import psycopg.conninfo
    import psycopg.rows
except ImportError:  # only a postgresql:// catalog needs it
    psycopg = None

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
    salt {blob} NOT NULL,
    hash {blob} NOT NULL,
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
    id {rowid_pk},
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
    id {rowid_pk},
    knowledge_base_id TEXT NOT NULL REFERENCES knowledge_bases(id) ON DELETE CASCADE,
    document_rowid {rowid} NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedding {blob} NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks(document_rowid);
CREATE INDEX IF NOT EXISTS chunks_knowledge_base ON chunks(knowledge_base_id, id);
CREATE TABLE IF NOT EXISTS chunk_log (
    seq {seq_pk},
    knowledge_base_id TEXT NOT NULL,
    chunk_rowid {rowid} NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('add', 'delete'))
);
CREATE INDEX IF NOT EXISTS chunk_log_knowledge_base ON chunk_log(knowledge_base_id, seq);
CREATE TABLE IF NOT EXISTS log_readers (
    replica TEXT NOT NULL,
    knowledge_base_id TEXT NOT NULL,
    seq {rowid} NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (knowledge_base_id, replica)
);
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
    documents_per_second {real} NOT NULL DEFAULT 0,
    worker TEXT,
    heartbeat_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, created_at);
"""

# Columns that later versions added, as (table, column, declaration): start-up adds those a catalog lacks.
ADDED_COLUMNS = [
    ("jobs", "started_at", "TEXT"),
    ("jobs", "documents_per_second", "{real} NOT NULL DEFAULT 0"),
    ("knowledge_bases", "generator", "TEXT"),
    # The index backend of the knowledge base's bm25 and dense retrievers: "local" or "milvus".
    ("knowledge_bases", "backend", "TEXT NOT NULL DEFAULT 'local'"),
    # The replica running a job and when it last said so; see Catalog.claim_job.
    ("jobs", "worker", "TEXT"),
    ("jobs", "heartbeat_at", "TEXT"),
]

# What a unique or foreign-key violation raises, on either backend: a name or key that already exists.
INTEGRITY_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError,) + (
    (psycopg.IntegrityError,) if psycopg is not None else ())

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
    worker: str | None = None  # the replica that claimed the job (see Catalog.claim_job)
    heartbeat_at: str | None = None


class _SQLite:
    """A catalog file; one writer at a time, which also makes every claim and log append atomic."""

    name = "sqlite"
    types = {"rowid_pk": "INTEGER PRIMARY KEY", "seq_pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "rowid": "INTEGER",
             "blob": "BLOB", "real": "REAL"}
    # The claim's UPDATE runs under SQLite's database-wide write lock, so it needs no row lock.
    skip_locked = ""
    serialise_writers = True

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def __str__(self) -> str:
        return f"sqlite:{self.path}"

    def connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA journal_mode=WAL")
        # FULL fsyncs the WAL on every commit, so an acknowledged write survives a power loss.
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        return connection

    @staticmethod
    def is_usable(connection: sqlite3.Connection) -> bool:
        return True

    @contextmanager
    def transaction(self, connection: sqlite3.Connection) -> Iterator[None]:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")

    def lock_schema(self, connection: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE already keeps other processes out while the schema is created."""

    def columns(self, connection: sqlite3.Connection, table: str) -> set[str]:
        return {row["name"] for row in connection.execute(f"PRAGMA table_info({table})")}

    def lock_knowledge_base(self, connection: sqlite3.Connection, knowledge_base_id: str) -> None:
        """Writers are already serialised by BEGIN IMMEDIATE."""

    def lock_knowledge_base_for_delete(self, connection: sqlite3.Connection, knowledge_base_id: str) -> None:
        """Writers are already serialised by BEGIN IMMEDIATE."""


class _PostgreSQLConnection:
    """A psycopg connection that takes the catalog's `?` placeholders, like sqlite3."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: tuple | list = ()) -> Any:
        return self.raw.execute(_postgresql_sql(sql), parameters or None)

    def executemany(self, sql: str, parameters: list) -> None:
        if parameters:
            with self.raw.cursor() as cursor:
                cursor.executemany(_postgresql_sql(sql), parameters)

    def close(self) -> None:
        self.raw.close()


class _PostgreSQL:
    """A PostgreSQL database shared by any number of replicas: row locks instead of one writer."""

    name = "postgresql"
    types = {"rowid_pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
             "seq_pk": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY", "rowid": "BIGINT", "blob": "BYTEA",
             "real": "DOUBLE PRECISION"}
    # A replica skips a job row that another replica's claim holds, instead of waiting for it and failing.
    skip_locked = " FOR UPDATE SKIP LOCKED"
    serialise_writers = False
    # Any constant: the lock that keeps two replicas starting together from creating the schema at once.
    SCHEMA_LOCK = 0x646F6D61696E

    def __init__(self, url: str) -> None:
        if psycopg is None:
            raise RuntimeError("a postgresql:// catalog needs psycopg 3: pip install 'psycopg[binary]'")
        self.url = url

    def __str__(self) -> str:
        # Never the password: only the host, port and database.
        info = psycopg.conninfo.conninfo_to_dict(self.url)
        return f"postgresql://{info.get('host', '')}:{info.get('port', '5432')}/{info.get('dbname', '')}"

    def connect(self) -> _PostgreSQLConnection:
        return _PostgreSQLConnection(psycopg.connect(self.url, autocommit=True, row_factory=psycopg.rows.dict_row))

    @staticmethod
    def is_usable(connection: _PostgreSQLConnection) -> bool:
        # After the server restarts or drops the connection, the next call on this thread opens a new one.
        return not (connection.raw.closed or connection.raw.broken)

    @contextmanager
    def transaction(self, connection: _PostgreSQLConnection) -> Iterator[None]:
        with connection.raw.transaction():
            yield

    def lock_schema(self, connection: _PostgreSQLConnection) -> None:
        connection.execute("SELECT pg_advisory_xact_lock(?)", (self.SCHEMA_LOCK,))

    def columns(self, connection: _PostgreSQLConnection, table: str) -> set[str]:
        rows = connection.execute("SELECT column_name AS name FROM information_schema.columns "
                                  "WHERE table_schema = current_schema() AND table_name = ?", (table,)).fetchall()
        return {row["name"] for row in rows}

    def lock_knowledge_base(self, connection: _PostgreSQLConnection, knowledge_base_id: str) -> None:
        """Serialise the writers of one knowledge base's chunk_log until this transaction commits.

        A log sequence number is drawn at insert time, but transactions commit in any order: without this lock
        replica A could commit seq 11 while seq 10 is still uncommitted on replica B, and an index catching
        up past 11 would never see 10. NO KEY UPDATE still lets other transactions insert rows that reference
        the knowledge base (jobs, aliases).
        """
        connection.execute("SELECT 1 FROM knowledge_bases WHERE id = ? FOR NO KEY UPDATE", (knowledge_base_id,))

    def lock_knowledge_base_for_delete(self, connection: _PostgreSQLConnection, knowledge_base_id: str) -> None:
        """Block new rows that reference the knowledge base (aliases, jobs) until this transaction commits.

        An insert's foreign key check takes FOR KEY SHARE on the referenced row, which FOR UPDATE blocks.
        """
        connection.execute("SELECT 1 FROM knowledge_bases WHERE id = ? FOR UPDATE", (knowledge_base_id,))


@lru_cache(maxsize=512)
def _postgresql_sql(sql: str) -> str:
    if "%" in sql:
        raise ValueError("catalog SQL must not contain '%'; psycopg would read it as a placeholder")
    return sql.replace("?", "%s")


def _dialect(location: Path | str) -> "_SQLite | _PostgreSQL":
    """A Path or a plain path string is an SQLite file; a URL names its backend by its scheme."""
    if isinstance(location, Path):
        return _SQLite(location)
    if location.startswith(("postgresql://", "postgres://")):
        return _PostgreSQL(location)
    if location.startswith("sqlite://"):
        return _SQLite(Path(location.removeprefix("sqlite://").removeprefix("/")))
    if "://" in location:
        raise ValueError(f"unsupported catalog URL scheme in {location.split('://')[0]!r}; "
                         "use sqlite:///path or postgresql://user:password@host:port/database")
    return _SQLite(Path(location))


class Catalog:
    """Thread-safe access to the catalog database: one connection per thread.

    On SQLite one writer at a time; on PostgreSQL writers run concurrently, with row locks where order matters
    (job claims, each knowledge base's chunk log).
    """

    def __init__(self, location: Path | str, *, replica: str = "local") -> None:
        """`replica` names this process among those sharing the catalog (see `prune_log`)."""
        self._dialect = _dialect(location)
        self.replica = replica
        self._reading: set[str] = set()  # knowledge bases whose log this replica has registered to read
        self.database = self._dialect.name  # "sqlite" or "postgresql"
        # Several replicas may share a PostgreSQL catalog, so it tracks each one's place in chunk_log.
        self._shared = self.database == "postgresql"
        self.path: Path | None = getattr(self._dialect, "path", None)
        self._local = threading.local()
        self._generation = 0
        self._open: list[tuple[threading.Thread, Any]] = []  # each connection with the thread that uses it
        self._open_lock = threading.Lock()
        self._write_lock = threading.Lock() if self._dialect.serialise_writers else nullcontext()
        self._migrate()

    def __str__(self) -> str:
        return str(self._dialect)

    def _migrate(self) -> None:
        """Create missing tables and indices, then add columns that later versions introduced."""
        schema = SCHEMA
        for name, declaration in self._dialect.types.items():
            schema = schema.replace("{" + name + "}", declaration)
        with self._transaction() as connection:
            self._dialect.lock_schema(connection)
            for statement in schema.split(";"):
                if statement.strip():
                    connection.execute(statement)
            existing: dict[str, set[str]] = {}
            for table, column, declaration in ADDED_COLUMNS:
                if table not in existing:
                    existing[table] = self._dialect.columns(connection, table)
                if column not in existing[table]:
                    for name, value in self._dialect.types.items():
                        declaration = declaration.replace("{" + name + "}", value)
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                    existing[table].add(column)

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if (connection is None or getattr(self._local, "generation", None) != self._generation
                or not self._dialect.is_usable(connection)):
            connection = self._dialect.connect()
            self._local.connection, self._local.generation = connection, self._generation
            with self._open_lock:
                # Server thread pools retire idle threads, so close the connections of threads that have
                # exited rather than keep one per thread ever started (PostgreSQL limits connections).
                finished = [entry for entry in self._open if not entry[0].is_alive()]
                self._open = [entry for entry in self._open if entry[0].is_alive()]
                self._open.append((threading.current_thread(), connection))
            _close_all(connection for _, connection in finished)
        return connection

    def close(self) -> None:
        """Close every thread's connection; a later call on any thread opens a new one."""
        with self._open_lock:
            connections, self._open = self._open, []
            self._generation += 1
        _close_all(connection for _, connection in connections)

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        connection = self._connection()
        with self._write_lock, self._dialect.transaction(connection):
            yield connection

    def _query(self, sql: str, parameters: tuple = ()) -> list[Any]:
        return self._connection().execute(sql, parameters).fetchall()

    def _query_one(self, sql: str, parameters: tuple = ()) -> Any:
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

    def _insert_key(self, connection: Any, *, tenant_id: str, role: str) -> tuple[ApiKey, str]:
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

    def get_knowledge_base(self, knowledge_base_id: str) -> KnowledgeBase | None:
        row = self._query_one("SELECT * FROM knowledge_bases WHERE id = ?", (knowledge_base_id,))
        return KnowledgeBase(**dict(row)) if row else None

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

    def delete_knowledge_base(self, knowledge_base_id: str) -> list[str]:
        """Delete a knowledge base with everything that references it, and return the names of its deleted aliases."""
        with self._transaction() as connection:
            # Until this commits, no alias can be pointed at the knowledge base, so the list below is complete.
            self._dialect.lock_knowledge_base_for_delete(connection, knowledge_base_id)
            aliases = connection.execute("DELETE FROM aliases WHERE knowledge_base_id = ? RETURNING name",
                                         (knowledge_base_id,)).fetchall()
            connection.execute("DELETE FROM chunk_log WHERE knowledge_base_id = ?", (knowledge_base_id,))
            connection.execute("DELETE FROM log_readers WHERE knowledge_base_id = ?", (knowledge_base_id,))
            connection.execute("DELETE FROM knowledge_bases WHERE id = ?", (knowledge_base_id,))
        return sorted(row["name"] for row in aliases)

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
        # int(): PostgreSQL sums integers as numeric.
        return [(row["id"], int(row["documents"]), int(row["chunks"])) for row in rows]

    def count_documents(self, knowledge_base_id: str) -> tuple[int, int]:
        row = self._query_one(
            "SELECT COUNT(*) AS documents, COALESCE(SUM(chunk_count), 0) AS chunks FROM documents "
            "WHERE knowledge_base_id = ?",
            (knowledge_base_id,),
        )
        return int(row["documents"]), int(row["chunks"])

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
            self._dialect.lock_knowledge_base(connection, knowledge_base_id)
            removed = self._delete_document_rows(connection, knowledge_base_id=knowledge_base_id,
                                                 document_id=document_id)
            document_rowid = connection.execute(
                "INSERT INTO documents (knowledge_base_id, document_id, title, source, content_hash, metadata, "
                "chunk_count, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (knowledge_base_id, document_id, title, source, content_hash, json.dumps(metadata), len(chunks),
                 now, now),
            ).fetchall()[0]["id"]
            added = []
            for chunk in chunks:
                added.append(connection.execute(
                    "INSERT INTO chunks (knowledge_base_id, document_rowid, position, text, metadata, embedding) "
                    "VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                    (knowledge_base_id, document_rowid, chunk.position, chunk.text, json.dumps(chunk.metadata),
                     np.ascontiguousarray(chunk.embedding, dtype=np.float32).tobytes()),
                ).fetchall()[0]["id"])
            connection.executemany(
                "INSERT INTO chunk_log (knowledge_base_id, chunk_rowid, op) VALUES (?, ?, 'add')",
                [(knowledge_base_id, rowid) for rowid in added],
            )
        return removed, added

    def delete_document(self, *, knowledge_base_id: str, document_id: str) -> list[int] | None:
        """Delete a document; returns its chunk rowids, or None when the document does not exist."""
        with self._transaction() as connection:
            self._dialect.lock_knowledge_base(connection, knowledge_base_id)
            exists = connection.execute(
                "SELECT 1 FROM documents WHERE knowledge_base_id = ? AND document_id = ?",
                (knowledge_base_id, document_id),
            ).fetchone()
            if exists is None:
                return None
            return self._delete_document_rows(connection, knowledge_base_id=knowledge_base_id,
                                              document_id=document_id)

    def _delete_document_rows(self, connection: Any, *, knowledge_base_id: str,
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
        return int(row["seq"] or 0)

    def changes_since(self, knowledge_base_id: str, sequence: int) -> list[tuple[int, int, str]]:
        if self._shared and knowledge_base_id not in self._reading:
            # This replica's indices of the knowledge base start at `sequence`: keep the log from there on.
            self._set_reader(knowledge_base_id, sequence, only_if_new=True)
            self._reading.add(knowledge_base_id)
        rows = self._query(
            "SELECT seq, chunk_rowid, op FROM chunk_log WHERE knowledge_base_id = ? AND seq > ? ORDER BY seq",
            (knowledge_base_id, sequence),
        )
        return [(row["seq"], row["chunk_rowid"], row["op"]) for row in rows]

    def prune_log(self, knowledge_base_id: str, through_sequence: int) -> None:
        """Record that this replica saved a snapshot through `through_sequence`; drop the log entries that every
        replica's snapshot covers.

        Replicas sharing a catalog each keep indices of their own that catch up from chunk_log, so one replica's
        snapshot must not drop entries another has yet to read. `log_readers` holds, per knowledge base and
        replica, the sequence of its last snapshot (or where its indices started, before the first); entries
        up to the lowest of them go. A replica that is gone for good keeps its row, and so the log, until the
        row is deleted by hand. SQLite serves one replica, so there the snapshot alone decides, as before.
        """
        floor = through_sequence
        if self._shared:
            self._set_reader(knowledge_base_id, through_sequence)
            self._reading.add(knowledge_base_id)
        with self._transaction() as connection:
            if self._shared:
                floor = connection.execute("SELECT MIN(seq) AS seq FROM log_readers WHERE knowledge_base_id = ?",
                                           (knowledge_base_id,)).fetchone()["seq"]
            connection.execute("DELETE FROM chunk_log WHERE knowledge_base_id = ? AND seq <= ?",
                               (knowledge_base_id, min(through_sequence, floor)))

    def _set_reader(self, knowledge_base_id: str, sequence: int, *, only_if_new: bool = False) -> None:
        update = "NOTHING" if only_if_new else "UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at"
        with self._transaction() as connection:
            connection.execute(
                "INSERT INTO log_readers (replica, knowledge_base_id, seq, updated_at) VALUES (?, ?, ?, ?) "
                f"ON CONFLICT (knowledge_base_id, replica) DO {update}",
                (self.replica, knowledge_base_id, sequence, utc_now()),
            )

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
        return [{"status": row["status"], **{name: int(row[name]) for name in ("jobs", "processed", "failed", "unchanged")}}
                for row in rows]

    def unfinished_jobs(self) -> list[Job]:
        rows = self._query("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at")
        return [_job(row) for row in rows]

    def claim_job(self, *, worker: str, lease_seconds: float) -> Job | None:
        """Atomically take the oldest job that no live replica runs, mark it running by `worker`, and return it.

        Oldest means by creation time, which has millisecond resolution: jobs created in the same millisecond
        are taken in any order.

        Claimable: a queued job; a running one released by a stopping replica (no worker); a running one of
        `worker` itself (this replica crashed and restarted); a running one whose worker has not sent a heartbeat
        for `lease_seconds` (that replica died). PostgreSQL skips rows another replica's claim has locked;
        SQLite runs the statement under its single writer lock. Either way two replicas never get the same job.
        """
        now = datetime.now(timezone.utc)
        stamp = now.isoformat(timespec="milliseconds")
        stale = (now - timedelta(seconds=lease_seconds)).isoformat(timespec="milliseconds")
        with self._transaction() as connection:
            rows = connection.execute(
                "UPDATE jobs SET status = 'running', worker = ?, heartbeat_at = ?, updated_at = ? WHERE id = ("
                "SELECT id FROM jobs WHERE status = 'queued' OR (status = 'running' AND (worker IS NULL "
                "OR worker = ? OR heartbeat_at IS NULL OR heartbeat_at < ?)) ORDER BY created_at, id LIMIT 1"
                f"{self._dialect.skip_locked}) RETURNING *",
                (worker, stamp, stamp, worker, stale),
            ).fetchall()
        return _job(rows[0]) if rows else None

    def heartbeat_job(self, job_id: str, worker: str) -> bool:
        """Record that `worker` still runs the job; False when the job is no longer its own."""
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND worker = ? AND status = 'running'",
                (utc_now(), job_id, worker),
            )
            return cursor.rowcount == 1

    def release_job(self, job_id: str, worker: str) -> None:
        """Hand a running job back on shutdown, so that any replica resumes it at once."""
        with self._transaction() as connection:
            connection.execute(
                "UPDATE jobs SET worker = NULL, heartbeat_at = NULL WHERE id = ? AND worker = ? AND status = 'running'",
                (job_id, worker),
            )

    def update_job(self, job: Job) -> bool:
        """Write a job's progress; False (and nothing written) when another worker has claimed it since."""
        job.updated_at = utc_now()
        with self._transaction() as connection:
            cursor = connection.execute(
                "UPDATE jobs SET status = ?, total = ?, processed = ?, failed = ?, unchanged = ?, errors = ?, "
                "updated_at = ?, started_at = ?, documents_per_second = ? WHERE id = ? AND COALESCE(worker, '') = ?",
                (job.status, job.total, job.processed, job.failed, job.unchanged,
                 json.dumps(job.errors[:MAX_JOB_ERRORS]), job.updated_at, job.started_at,
                 job.documents_per_second, job.id, job.worker or ""),
            )
            return cursor.rowcount == 1

def _close_all(connections: Iterator[Any]) -> None:
    for connection in connections:
        try:
            connection.close()
        except Exception:  # already broken, so there is nothing to release
            pass


def _hash_key(key: str, salt: bytes) -> bytes:
    return hashlib.sha256(salt + key.encode("utf-8")).digest()


def _document(row: Any) -> Document:
    values = dict(row)
    values["rowid"] = values.pop("id")
    values["metadata"] = json.loads(values["metadata"])
    return Document(**values)


def _chunk(row: Any) -> ChunkRow:
    return ChunkRow(rowid=row["id"], document_id=row["document_id"], position=row["position"], title=row["title"],
                    text=row["text"], metadata=json.loads(row["metadata"]),
                    embedding=np.frombuffer(row["embedding"], dtype=np.float32))


def _job(row: Any) -> Job:
    values = dict(row)
    values["errors"] = json.loads(values["errors"])
    values["items"] = json.loads(values["items"])
    values["options"] = json.loads(values["options"])
    return Job(**values)
