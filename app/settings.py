"""Service settings, read from `DOMAINRAG_*` environment variables."""

import socket
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from generation.registry import BackboneSpec, builtin_backbones


class Settings(BaseSettings):
    """Everything the service reads from its environment; build it with `get_settings()`."""

    model_config = SettingsConfigDict(env_prefix="DOMAINRAG_", env_file=None, extra="ignore")

    data_dir: Path = Field(Path("data"), description="Folder for the SQLite catalog, index snapshots and raw uploads.")
    database_url: SecretStr | None = Field(
        None, description="The catalog: unset for DATA_DIR/catalog.sqlite3, sqlite:///file (relative to the data "
        "dir) or sqlite:////absolute/file, or postgresql://user:password@host:port/database to share one catalog "
        "between replicas.",
    )
    replica_id: str | None = Field(
        None, description="This replica's name in the jobs it claims; unset uses hostname:port. Must differ "
        "between replicas sharing a catalog and stay the same across a replica's restarts.",
    )
    job_poll_interval_s: float = Field(
        1.0, gt=0, description="Seconds between looks at the catalog for jobs, such as those another replica queued."
    )
    job_lease_s: float = Field(
        60.0, gt=0, description="Seconds without a heartbeat after which another replica takes over a running job."
    )
    admin_key: SecretStr | None = Field(None, description="Bearer key that may create tenants; unset disables tenant creation.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    embedder: str = Field(
        "minilm",
        description="'minilm' for the packaged all-MiniLM-L6-v2, or a path to any sentence-transformers directory.",
    )
    generator: str = Field(
        "smollm2",
        description="Default backbone: 'smollm2' (the packaged SmolLM2-135M-Instruct GGUF), 'extractive' (no "
        "model), a name from DOMAINRAG_BACKBONES, or a path to a checkpoint directory or a .gguf file.",
    )
    backbones: dict[str, BackboneSpec] = Field(
        default_factory=dict,
        description="Extra named backbones as JSON, for example "
        '{"legal-ft": {"kind": "peft", "path": "/models/legal-lora", "base": "smollm2"}}.',
    )
    generator_max_new_tokens: int = Field(160, ge=1, le=4096, description="Longest answer, in generator tokens.")
    generator_context_tokens: int = Field(
        2048, ge=256, description="Prompt and answer budget in generator tokens; longer prompts are slower on CPU."
    )

    cross_encoder: Path | None = Field(
        None, description="Local sentence-transformers CrossEncoder directory for \"rerank\": \"cross-encoder\"."
    )

    chunk_size: int = Field(200, ge=16, description="Default chunk size in embedder tokens for new knowledge bases.")
    chunk_overlap: int = Field(32, ge=0, description="Default overlap between consecutive chunks, in embedder tokens.")

    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest request body accepted for an upload.")
    max_pdf_pages: int = Field(2000, ge=1, description="Most pages a PDF may have; a longer one is a per-file error.")
    parse_timeout_s: float = Field(
        120.0, ge=0, description="Seconds one uploaded file may take to parse before it becomes a per-file error; "
        "0 parses in the ingestion thread with no limit."
    )
    max_json_body_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest request body accepted by any route other than the upload route."
    )
    rate_limit_per_second: float = Field(
        100.0, ge=0, description="Requests per second that one API key may sustain; 0 turns the limit off."
    )
    rate_limit_burst: int = Field(
        200, ge=1, description="Requests that one API key may send at once before the per-second rate applies."
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="Upload requests that one API key may have in progress at the same time."
    )
    shutdown_timeout_s: float = Field(
        30.0, ge=0, description="Seconds a stopping service waits for requests in progress and for the "
        "ingestion worker to finish its current document."
    )
    embed_batch_size: int = Field(64, ge=1, description="Chunks embedded in one forward pass during ingestion.")
    query_batch_size: int = Field(
        16, ge=1, description="Most queries of concurrent searches embedded together in one forward pass; "
        "1 turns batching off, so each search embeds its own query in its own thread."
    )
    query_batch_wait_ms: float = Field(
        2.0, ge=0, le=1000, description="Milliseconds the query embedder waits for more queries once two or more "
        "are queued; a query that arrives alone is embedded at once."
    )
    torch_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads for ingestion embedding and local generators; unset uses "
        "the core count."
    )
    query_embed_workers: int | None = Field(
        None, ge=1, description="Threads that embed search queries, each running its own forward passes on its "
        "own batch; unset uses the core count."
    )
    query_torch_threads: int | None = Field(
        1, ge=1, description="torch intra-op threads of the thread that embeds the queries of searches (when "
        "DOMAINRAG_QUERY_BATCH_SIZE is above 1); unset uses DOMAINRAG_TORCH_THREADS. One by default, so that a forward pass leaves the other cores to the rest "
        "of the searches: OpenMP threads that share cores with busy request threads (or other processes) spend "
        "much of their time waiting for each other."
    )
    graph_index: bool = Field(
        True, description="Keep an entity graph of each knowledge base, for 'graph' retrieval, global queries and "
        "the /graph routes. false leaves it out, and those requests get 422. The graph holds every entity in memory "
        "and embeds the names among them, which a knowledge base of a million chunks may not afford."
    )
    dense_approximate_threshold: int = Field(
        100_000, ge=1, description="Chunks in a knowledge base above which dense search switches from an exact "
        "FAISS index to an approximate IVF index (and back below half of it). IVF search is several times faster "
        "at a million chunks but may miss a few true neighbours; the index is rebuilt beside the old one while "
        "searches go on."
    )

    default_backend: str = Field(
        "local", pattern="^(local|milvus)$", description="Index backend of knowledge bases created without "
        "\"backend\": 'local' (BM25 and FAISS in this process) or 'milvus' (DOMAINRAG_MILVUS_URI)."
    )
    milvus_uri: str | None = Field(
        None, description="Milvus for knowledge bases on the 'milvus' backend: a file path ending in .db runs "
        "milvus-lite inside the service; http://host:19530 is a Milvus server or cluster. Unset: "
        "DATA_DIR/milvus.db."
    )
    milvus_token: SecretStr | None = Field(None, description="Milvus token: 'user:password' or an API key.")

    @property
    def milvus_location(self) -> str:
        return self.milvus_uri or str(self.data_dir / "milvus.db")

    @model_validator(mode="after")
    def _check_chunking(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"DOMAINRAG_CHUNK_OVERLAP ({self.chunk_overlap}) must be smaller than "
                f"DOMAINRAG_CHUNK_SIZE ({self.chunk_size})"
            )
        return self

    @property
    def all_backbones(self) -> dict[str, BackboneSpec]:
        return {**builtin_backbones(), **self.backbones}

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite3"

    @property
    def catalog_location(self) -> Path | str:
        """What `storage.catalog.Catalog` opens: an SQLite file path or a PostgreSQL URL."""
        url = self.database_url.get_secret_value().strip() if self.database_url is not None else ""
        if not url or url == "sqlite://":
            return self.catalog_path
        if url.startswith("sqlite://"):
            path = Path(url.removeprefix("sqlite://").removeprefix("/"))
            return path if path.is_absolute() else self.data_dir / path
        if url.startswith(("postgresql://", "postgres://")):
            return url
        raise ValueError("DOMAINRAG_DATABASE_URL must start with sqlite:// or postgresql://")

    @property
    def worker_name(self) -> str:
        return self.replica_id or f"{socket.gethostname()}:{self.port}"


@lru_cache
def get_settings() -> Settings:
    """Build the process-wide settings once, on first use rather than at import."""
    return Settings()
