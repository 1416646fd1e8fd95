"""Request and response models of the REST API; one per purpose, list responses carry data and count."""

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
# The rule to show a client, in words, for each pattern that a request field must match.
PATTERN_RULES = {NAME_PATTERN: NAME_RULE}


class RequestModel(BaseModel):
    """Base of every JSON request body. It rejects unknown fields with a 422, so that a misspelt option is not
    silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TenantCreate(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description=f"Unique tenant name, {NAME_RULE}.")
    role: Literal["read-write", "read-only"] = Field("read-write", description="Role of the first API key.")


class TenantCreated(BaseModel):
    id: str
    name: str
    api_key: str = Field(description="Shown once; only a salted hash is stored.")


class KnowledgeBaseCreate(RequestModel):
    name: str = Field(pattern=NAME_PATTERN, description=f"Name unique within the tenant, {NAME_RULE}.")
    chunk_size: int | None = Field(None, ge=16, description="Chunk size in embedder tokens; defaults to settings.")
    chunk_overlap: int | None = Field(None, ge=0, description="Overlap between chunks in embedder tokens.")
    generator: str | None = Field(None, description="Backbone that answers queries; defaults to DOMAINRAG_GENERATOR.")
    backend: Literal["local", "milvus"] | None = Field(
        None, description="Index backend of the BM25 and dense retrievers: 'local' (in the service) or 'milvus' "
        "(DOMAINRAG_MILVUS_URI); defaults to DOMAINRAG_DEFAULT_BACKEND. The graph is always local.")


class KnowledgeBasePublic(BaseModel):
    id: str
    name: str
    chunk_size: int
    chunk_overlap: int
    document_count: int
    chunk_count: int
    generator: str | None
    backend: str = Field(description="Index backend of the BM25 and dense retrievers: 'local' or 'milvus'.")
    created_at: str


class KnowledgeBaseDeleted(BaseModel):
    id: str
    name: str
    deleted_aliases: list[str] = Field(description="Aliases that pointed to the knowledge base, deleted with it.")


class MigrationRequest(RequestModel):
    to: Literal["milvus"] = Field(description="The backend to move the knowledge base's BM25 and dense indices to.")


class MigrationPublic(BaseModel):
    knowledge_base: KnowledgeBasePublic
    chunks_copied: int = Field(description="Chunks copied with their stored embeddings; none was embedded again.")
    seconds: float


class KnowledgeBaseList(BaseModel):
    data: list[KnowledgeBasePublic]
    count: int


class AliasUpdate(RequestModel):
    knowledge_base: str = Field(min_length=1, description="Name or id of the knowledge base the alias points to.")


class AliasPublic(BaseModel):
    name: str
    knowledge_base_id: str
    knowledge_base_name: str
    updated_at: str


class AliasList(BaseModel):
    data: list[AliasPublic]
    count: int


class JobAccepted(BaseModel):
    job_id: str
    status: str
    items: int


class JobError(BaseModel):
    source: str
    message: str


class JobPublic(BaseModel):
    id: str
    knowledge_base_id: str
    status: str = Field(description="queued, running, succeeded, completed_with_errors or failed")
    total: int
    processed: int
    failed: int
    unchanged: int
    errors: list[JobError] = Field(description="Per-file errors with the reason; at most 1000 are kept.")
    documents_per_second: float = Field(description="Documents processed per second since the job started.")
    created_at: str
    started_at: str | None
    updated_at: str


class DocumentPublic(BaseModel):
    document_id: str
    title: str
    source: str
    content_hash: str
    metadata: dict[str, Any]
    chunk_count: int
    created_at: str
    updated_at: str


class DocumentList(BaseModel):
    data: list[DocumentPublic]
    count: int
    total: int
    offset: int
    limit: int


class _QueryText(RequestModel):
    query: str = Field(min_length=1, max_length=4000)

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain text, not only whitespace")
        return value


RerankMode = Literal["none", "llm", "cross-encoder"]


class _Rerank(RequestModel):
    rerank: RerankMode = Field("none", description="Rerank the fused candidates: 'none', 'llm' (the generator "
                               "judges each passage, RankRAG-style) or 'cross-encoder' (DOMAINRAG_CROSS_ENCODER).")
    rerank_candidates: int = Field(20, ge=1, le=200, description="Fused candidates that the reranker scores.")


class SearchRequest(_QueryText, _Rerank):
    top_k: int = Field(10, ge=1, le=1000)
    retrievers: list[str] = Field(default_factory=lambda: ["bm25", "dense"],
                                  description="Retrievers to fuse: any of 'bm25', 'dense', 'graph'.")


class SearchHitPublic(BaseModel):
    chunk_id: str
    document_id: str
    score: float = Field(description="Reciprocal rank fusion score.")
    text: str
    title: str
    ranks: dict[str, int] = Field(description="1-based rank of the chunk in each retriever that returned it.")
    rerank_score: float | None = Field(None, description="The reranker's score, when the request reranked.")
    metadata: dict[str, Any]


class SearchResponse(BaseModel):
    hits: list[SearchHitPublic]
    timings_ms: dict[str, float]


class QueryRequest(_QueryText, _Rerank):
    top_k: int = Field(5, ge=1, le=50, description="Passages given to the generator as context.")
    retrievers: list[str] = Field(default_factory=lambda: ["bm25", "dense"])
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    generator: str | None = Field(None, description="Backbone for this query, overriding the knowledge base's.")
    mode: Literal["local", "global"] = Field(
        "local", description="'local' generates the answer from retrieved chunks. 'global' generates it from the "
        "knowledge graph's community summaries, for broad questions about the corpus's themes, and ignores "
        "'retrievers' and 'rerank'.")
    stream: bool = Field(False, description="Answer as Server-Sent Events: 'token' events, then one 'done' "
                         "event with citations and timings, or an 'error' event.")


class CitationPublic(BaseModel):
    marker: int
    document_id: str
    chunk_id: str
    score: float
    snippet: str


class QueryResponse(BaseModel):
    answer: str
    citations: list[CitationPublic]
    timings_ms: dict[str, float]


class EntityNeighbourPublic(BaseModel):
    name: str
    weight: float = Field(description="Sentence co-occurrences with the entity.")


class EntityPublic(BaseModel):
    name: str = Field(description="The name as first written in the knowledge base.")
    key: str = Field(description="The normalised name that all spelling variants share.")
    mention_count: int
    chunk_ids: list[str] = Field(description="Chunks that mention the entity.")
    neighbours: list[EntityNeighbourPublic] = Field(description="Most related entities, strongest first.")


class EntityList(BaseModel):
    data: list[EntityPublic]
    count: int


class CommunityPublic(BaseModel):
    id: int
    size: int = Field(description="Number of entities in the community.")
    entities: list[str] = Field(description="The most central entities, most central first.")
    summary: str
    chunk_ids: list[str] = Field(description="Chunks whose sentences the summary quotes.")


class CommunityList(BaseModel):
    data: list[CommunityPublic]
    count: int
    computing: bool = Field(description="Whether a newer partition is being computed in the background.")
