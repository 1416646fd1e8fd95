"""The Milvus backend: BM25 and dense retrieval of one knowledge base in one Milvus collection.

The same `pymilvus` client code talks to milvus-lite (a URI that is a file path ending in `.db`, run inside
this process) and to a Milvus server or cluster (`http://host:19530`). Each knowledge base gets its own
collection, named from its internal id, with one row per chunk:

- `rowid` (primary key): the catalog's chunk rowid, which every hit is reported by;
- `chunk_id`, `document_id`, `tenant_id`, `knowledge_base_id`: stored for filtering and inspection; every
  search is filtered by tenant and knowledge base, so a collection shared by mistake still leaks nothing;
- `text`: the chunk's title and text after *our* analyser (`retrievers.text.Analyzer`: stop words removed,
  Snowball-stemmed), which Milvus's standard tokeniser splits back into those terms and its BM25 function
  turns into the sparse vector `sparse`.
  Analysing before Milvus keeps BM25 terms identical between the local and the Milvus backend, and between
  milvus-lite (whose analysers have no stemmer) and a server;
- `dense`: the stored float32 embedding, searched by inner product.

Writes go in batches with retries; a batch that still fails raises `IndexWriteError`, and the knowledge base
index does not advance past the changes it could not apply. Graph retrieval stays local (retrievers/graph).
"""

import logging
import re
import threading
import time
from pathlib import Path

import numpy as np

from retrievers.base import Hit, IndexedChunk
from retrievers.dense import DEFAULT_APPROXIMATE_THRESHOLD
from retrievers.text import Analyzer

logger = logging.getLogger(__name__)

COLLECTION_PREFIX = "domainrag_"
# Rows per insert or delete request: small enough for Milvus's 64 MB gRPC message limit at 384-1024 dimensions
# with long chunk texts, large enough that a 100,000-chunk migration needs a few hundred requests.
BATCH_ROWS = 1000
WRITE_ATTEMPTS = 3
RETRY_DELAY_S = 0.5
# Lucene's BM25 constants, as in retrievers/bm25.py; milvus-lite's own default k1 is 1.5.
BM25_K1 = 1.2
BM25_B = 0.75
# Exact (FLAT) dense search up to the local backend's threshold, HNSW above it. HNSW rather than IVF here
# because a Milvus server builds and merges HNSW per segment in the background, while IVF needs training data
# per segment; both are what milvus-lite supports besides FLAT (through faiss-cpu).
HNSW_PARAMS = {"M": 16, "efConstruction": 200}
HNSW_MIN_EF = 128
TEXT_MAX_BYTES = 65_535
ID_MAX_BYTES = 1024
_INTERNAL_ID = re.compile(r"^[A-Za-z0-9_]{1,200}$")


class IndexWriteError(RuntimeError):
    """A batch of adds or deletes could not be written to the index backend after retries."""


class IndexUnavailable(RuntimeError):
    """The index backend could not answer a search."""


def collection_name(knowledge_base_id: str) -> str:
    if not _INTERNAL_ID.match(knowledge_base_id):
        raise ValueError(f"not an internal knowledge base id: {knowledge_base_id!r}")
    return COLLECTION_PREFIX + knowledge_base_id


def _truncate(text: str, limit: int) -> str:
    encoded = text.encode("utf-8")
    if len(encoded) <= limit:
        return text
    return encoded[:limit].decode("utf-8", errors="ignore")


class MilvusStore:
    """One Milvus client per process and URI, connected on first use so local-only services never start one."""

    def __init__(self, uri: str, token: str | None = None) -> None:
        self.uri = uri
        self.token = token
        self._client = None
        self._lock = threading.Lock()

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))

    @property
    def client(self):
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                if self.is_lite:
                    Path(self.uri).parent.mkdir(parents=True, exist_ok=True)
                    # pymilvus asks milvus-lite for a timestamp (AllocTimestamp) after each create_index, which
                    # milvus-lite does not implement; its gRPC server logs that as an error and pymilvus goes on.
                    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
                self._client = MilvusClient(uri=self.uri, token=self.token or "")
                logger.info("connected to Milvus", extra={"uri": self.uri if self.is_lite else self.uri.split("@")[-1]})
            return self._client

    def drop(self, knowledge_base_id: str) -> None:
        if self._client is None and not self.is_lite:
            return
        name = collection_name(knowledge_base_id)
        if self.client.has_collection(name):
            self.client.drop_collection(name)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None


class MilvusCollection:
    """The collection of one knowledge base; writes for both Milvus retrievers, which share its rows."""

    def __init__(self, store: MilvusStore, *, knowledge_base_id: str, tenant_id: str, dimension: int,
                 analyzer: Analyzer, approximate_threshold: int = DEFAULT_APPROXIMATE_THRESHOLD) -> None:
        if not _INTERNAL_ID.match(tenant_id):
            raise ValueError(f"not an internal tenant id: {tenant_id!r}")
        self.store = store
        self.name = collection_name(knowledge_base_id)
        self.knowledge_base_id = knowledge_base_id
        self.tenant_id = tenant_id
        self.dimension = dimension
        self.analyzer = analyzer
        self.approximate_threshold = approximate_threshold
        # Both ids are checked against _INTERNAL_ID, so they cannot break out of the quoted filter.
        self.filter = f'tenant_id == "{tenant_id}" and knowledge_base_id == "{knowledge_base_id}"'
        self._count = 0
        self._index_type = "FLAT"

    # Writer protocol, as KnowledgeBaseIndex drives it

    def __len__(self) -> int:
        return self._count

    def load(self, directory: Path) -> None:
        """Attach to an existing collection; raises when it is missing so the index rebuilds it from the catalog."""
        client = self.store.client
        if not client.has_collection(self.name):
            raise FileNotFoundError(f"Milvus collection {self.name} does not exist")
        fields = {field["name"]: field for field in client.describe_collection(self.name)["fields"]}
        dimension = int(fields.get("dense", {}).get("params", {}).get("dim", 0))
        if dimension != self.dimension:
            raise ValueError(f"Milvus collection {self.name} has dimension {dimension}, the embedder has "
                             f"{self.dimension}")
        self._index_type = client.describe_index(self.name, "dense").get("index_type", "FLAT")
        client.load_collection(self.name)
        self._count = self._stored_count()

    def reset(self, expected_rows: int = 0) -> None:
        """Drop the collection if it exists and create it empty, with the dense index for `expected_rows`."""
        client = self.store.client
        if client.has_collection(self.name):
            client.drop_collection(self.name)
        self._create(index_type="HNSW" if expected_rows > self.approximate_threshold else "FLAT")
        self._count = 0

    def save(self, directory: Path) -> None:
        self._retry("flush", lambda: self.store.client.flush(self.name))

    def add(self, chunks: list[IndexedChunk], *, flush: bool = True) -> None:
        """Upsert the chunks; `flush=False` leaves them in milvus-lite's memtable for a bulk load to flush once."""
        for start in range(0, len(chunks), BATCH_ROWS):
            rows = [self._row(chunk) for chunk in chunks[start:start + BATCH_ROWS]]
            self._retry("upsert", lambda rows=rows: self._upsert(rows))
        if chunks:
            if flush:
                self._flush_if_lite()
            self._count = self._stored_count()
            self._fit_index_to_size()

    def delete(self, rowids: list[int]) -> None:
        for start in range(0, len(rowids), BATCH_ROWS):
            batch = [int(rowid) for rowid in rowids[start:start + BATCH_ROWS]]
            self._retry("delete", lambda batch=batch: self.store.client.delete(self.name, ids=batch))
        if rowids:
            self._flush_if_lite()
            self._count = self._stored_count()

    # Searches

    def search_bm25(self, query: str, top_k: int) -> list[Hit]:
        # Each distinct term once, as the local BM25 scores a query; Milvus would weight a repeated term by its count.
        terms = " ".join(dict.fromkeys(self.analyzer.terms(query)))
        if not terms or self._count == 0:
            return []
        results = self._search([terms], anns_field="sparse", top_k=top_k, params={"metric_type": "BM25"})
        # milvus-lite reports a BM25 score as its negative (a distance); a server reports the score itself.
        return [Hit(rowid=rowid, score=abs(distance), source="bm25") for rowid, distance in results]

    def search_dense(self, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        if query_embedding is None:
            raise ValueError("dense search needs the query's embedding")
        if self._count == 0:
            return []
        vector = np.asarray(query_embedding, dtype=np.float32).reshape(-1).tolist()
        params: dict = {"metric_type": "IP"}
        if self._index_type == "HNSW":
            params["params"] = {"ef": max(top_k, HNSW_MIN_EF)}
        results = self._search([vector], anns_field="dense", top_k=top_k, params=params)
        return [Hit(rowid=rowid, score=float(distance), source="dense") for rowid, distance in results]

    # Internals

    def _search(self, data: list, *, anns_field: str, top_k: int, params: dict) -> list[tuple[int, float]]:
        try:
            result = self.store.client.search(self.name, data=data, anns_field=anns_field, limit=top_k,
                                              filter=self.filter, output_fields=["rowid"], search_params=params)
        except Exception as error:
            raise IndexUnavailable(f"Milvus search of {self.name} failed: {error}") from error
        hits = []
        for hit in result[0]:
            rowid = hit.get("rowid", hit.get("id"))
            hits.append((int(rowid), float(hit["distance"])))
        return hits

    def _row(self, chunk: IndexedChunk) -> dict:
        return {
            "rowid": int(chunk.rowid),
            "chunk_id": _truncate(chunk.chunk_id, ID_MAX_BYTES),
            "document_id": _truncate(chunk.document_id, ID_MAX_BYTES),
            "tenant_id": self.tenant_id,
            "knowledge_base_id": self.knowledge_base_id,
            "text": _truncate(" ".join(self.analyzer.terms(chunk.text)), TEXT_MAX_BYTES),
            "dense": np.asarray(chunk.embedding, dtype=np.float32).reshape(-1).tolist(),
        }

    def _retry(self, action: str, call) -> None:
        delay = RETRY_DELAY_S
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                call()
                return
            except Exception as error:
                if attempt == WRITE_ATTEMPTS:
                    raise IndexWriteError(f"Milvus {action} on {self.name} failed after {attempt} attempts: "
                                          f"{error}") from error
                logger.warning("Milvus write failed; retrying", extra={"collection": self.name, "action": action,
                                                                      "attempt": attempt, "error": str(error)})
                time.sleep(delay)
                delay *= 2

    def _flush_if_lite(self) -> None:
        # milvus-lite scans unflushed rows in Python on every search, about ten times slower than its flushed,
        # indexed segments (3,000 chunks: 2.8 s against 0.3 s per dense search on a loaded 2-core machine). A
        # server flushes on its own schedule, and flushing there after every write would make tiny segments.
        if self.store.is_lite:
            self._retry("flush", lambda: self.store.client.flush(self.name))

    def _upsert(self, rows: list[dict]) -> None:
        self.store.client.upsert(self.name, rows)

    def _stored_count(self) -> int:
        # Unfiltered: the collection holds this knowledge base only, and milvus-lite evaluates a filter in Python
        # (3,000 chunks: 3.4 s with the tenant filter, 0.07 s without).
        result = self.store.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"]) if result else 0

    def _create(self, *, index_type: str) -> None:
        from pymilvus import DataType, Function, FunctionType

        client = self.store.client
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("rowid", DataType.INT64, is_primary=True)
        schema.add_field("chunk_id", DataType.VARCHAR, max_length=ID_MAX_BYTES)
        schema.add_field("document_id", DataType.VARCHAR, max_length=ID_MAX_BYTES)
        schema.add_field("tenant_id", DataType.VARCHAR, max_length=64)
        schema.add_field("knowledge_base_id", DataType.VARCHAR, max_length=64)
        # Whitespace splitting would be exact for our analysed terms, but milvus-lite knows only the standard
        # (\w+) and jieba tokenisers; our terms are \w+ runs already, so standard splits them the same way.
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True,
                         analyzer_params={"tokenizer": "standard"})
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dimension)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["text"],
                                     output_field_names=["sparse"]))
        # Strong consistency: a search sees every write acknowledged before it, as with the local indices.
        client.create_collection(self.name, schema=schema, index_params=self._index_params(index_type),
                                 consistency_level="Strong")
        client.load_collection(self.name)
        self._index_type = index_type

    def _index_params(self, index_type: str, *, sparse: bool = True):
        index_params = self.store.client.prepare_index_params()
        if index_type == "HNSW":
            index_params.add_index(field_name="dense", index_type="HNSW", metric_type="IP", params=HNSW_PARAMS)
        else:
            index_params.add_index(field_name="dense", index_type="FLAT", metric_type="IP")
        if sparse:
            index_params.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25",
                                   params={"bm25_k1": BM25_K1, "bm25_b": BM25_B})
        return index_params

    def _fit_index_to_size(self) -> None:
        """Move the dense field from FLAT to HNSW once the collection outgrows the threshold (and not back)."""
        if self._index_type != "FLAT" or self._count <= self.approximate_threshold:
            return
        started = time.perf_counter()
        client = self.store.client
        client.release_collection(self.name)
        client.drop_index(self.name, "dense")
        client.create_index(self.name, self._index_params("HNSW", sparse=False))
        client.load_collection(self.name)
        self._index_type = "HNSW"
        logger.info("Milvus dense index rebuilt", extra={"collection": self.name, "kind": "HNSW",
                                                        "vectors": self._count,
                                                        "ms": round(1000 * (time.perf_counter() - started), 1)})


class MilvusBM25Retriever:
    """BM25 over the collection. It is also the collection's writer: one upsert writes the text and the vector of a
    chunk, so the dense view's writes are no-ops and a knowledge base index that adds to both writes once."""

    name = "bm25"

    def __init__(self, collection: MilvusCollection) -> None:
        self.collection = collection

    def add(self, chunks: list[IndexedChunk]) -> None:
        self.collection.add(chunks)

    def delete(self, rowids: list[int]) -> None:
        self.collection.delete(rowids)

    def save(self, directory: Path) -> None:
        self.collection.save(directory)

    def load(self, directory: Path) -> None:
        self.collection.load(directory)

    def search(self, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        return self.collection.search_bm25(query, top_k)

    def __len__(self) -> int:
        return len(self.collection)


class MilvusDenseRetriever:
    """Dense search over the collection; its rows are written by the BM25 view (see there)."""

    name = "dense"

    def __init__(self, collection: MilvusCollection) -> None:
        self.collection = collection

    def add(self, chunks: list[IndexedChunk]) -> None:
        pass

    def delete(self, rowids: list[int]) -> None:
        pass

    def save(self, directory: Path) -> None:
        pass

    def load(self, directory: Path) -> None:
        pass

    def search(self, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        return self.collection.search_dense(query_embedding, top_k)

    def __len__(self) -> int:
        return len(self.collection)

    # The local dense retriever's rebuild hooks: Milvus builds and swaps its indices itself.

    def rebuild_if_needed(self) -> None:
        pass

    def begin_rebuild(self) -> None:
        return None


MILVUS_RETRIEVERS = {"bm25": MilvusBM25Retriever, "dense": MilvusDenseRetriever}
