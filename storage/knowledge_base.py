"""The indices of one knowledge base, kept in step with the catalog, and the registry of loaded ones."""

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from generation.base import Generator
from retrievers.base import Hit, IndexedChunk, Retriever
from retrievers.bm25 import BM25Retriever
from retrievers.dense import DEFAULT_APPROXIMATE_THRESHOLD, DenseRetriever
from retrievers.embedders import Embedder
from retrievers.graph import GraphRetriever
from retrievers.graph.communities import Community, CommunityHit
from retrievers.graph.retriever import EntityInfo
from retrievers.milvus import MILVUS_RETRIEVERS, MilvusCollection, MilvusStore
from retrievers.text import Analyzer
from storage.catalog import Catalog, ChunkRow
from storage.locks import ReadWriteLock

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
RETRIEVER_NAMES = ("bm25", "dense", "graph")
# Snapshot after this many logged changes, so that a restart replays at most this many from the catalog.
SNAPSHOT_EVERY_CHANGES = 20_000

# Maps a knowledge base id to the generator its graph extracts entities and writes summaries with. That is the
# knowledge base's backbone when the backbone is marked capable, else None for rule-based extraction and extractive
# summaries.
GraphGeneratorResolver = Callable[[str], Generator | None]


class AlreadyMigrated(RuntimeError):
    """A migration found the knowledge base already on the target backend, moved there by another request."""


class GraphIndexOff(RuntimeError):
    """The registry keeps no entity graph (graph_index=False), so graph search and inspection are unavailable."""


def indexed_text(chunk: ChunkRow) -> str:
    """Return the text that every index reads: the document title, then the chunk."""
    return f"{chunk.title}\n{chunk.text}" if chunk.title else chunk.text


def indexed_chunks(rows: list[ChunkRow]) -> list[IndexedChunk]:
    return [IndexedChunk(rowid=row.rowid, text=indexed_text(row), embedding=row.embedding,
                         document_id=row.document_id, chunk_id=f"{row.document_id}#{row.position}") for row in rows]


class KnowledgeBaseIndex:
    """BM25, dense and graph indices of one knowledge base, with the catalog sequence number they cover."""

    # Set by use_milvus() before open(): the Milvus collection that serves bm25 and dense; None keeps them local.
    _milvus: MilvusCollection | None = None

    def __init__(self, *, knowledge_base_id: str, directory: Path, catalog: Catalog, dimension: int,
                 embedder_name: str, analyzer: Analyzer,
                 dense_approximate_threshold: int = DEFAULT_APPROXIMATE_THRESHOLD, embedder: Embedder | None = None,
                 graph_generator: GraphGeneratorResolver | None = None, graph_index: bool = True) -> None:
        """`graph_index` False keeps bm25 and dense only: no entity graph is built, loaded, saved or embedded."""
        self.knowledge_base_id = knowledge_base_id
        self.embedder = embedder  # embeds entity names for the graph's query linking; None leaves that off
        self.graph_generator = graph_generator
        self.directory = directory
        self.catalog = catalog
        self.dimension = dimension
        self.embedder_name = embedder_name
        self.analyzer = analyzer
        self.dense_approximate_threshold = dense_approximate_threshold
        self.retriever_names = RETRIEVER_NAMES if graph_index else tuple(
            name for name in RETRIEVER_NAMES if name != "graph")
        self.retrievers: dict[str, Retriever] = {}
        self.sequence = 0
        self._unsaved_changes = 0
        self._lock = ReadWriteLock()
        # One dense rebuild at a time; it runs outside self._lock so that searches go on meanwhile.
        self._rebuild_lock = threading.Lock()
        self._reset()

    def _new_retriever(self, name: str) -> Retriever:
        if self._milvus is not None and name in MILVUS_RETRIEVERS:
            return MILVUS_RETRIEVERS[name](self._milvus)
        if name == "bm25":
            return BM25Retriever(analyzer=self.analyzer)
        if name == "dense":
            return DenseRetriever(self.dimension, approximate_threshold=self.dense_approximate_threshold,
                                  rebuild_inline=False)
        graph = GraphRetriever(embedder=self.embedder)
        if self.graph_generator is not None:
            graph.use_generator(self.graph_generator(self.knowledge_base_id))
        return graph

    def _reset(self) -> None:
        self.retrievers = {name: self._new_retriever(name) for name in self.retriever_names}
        self.sequence = 0

    def __len__(self) -> int:
        return len(self.retrievers["dense"])

    def open(self) -> None:
        """Load the last snapshot and catch up from the catalog.

        A retriever whose snapshot is missing or unreadable (a new retriever type, a corrupt file) is rebuilt
        on its own from the catalog's stored embeddings. The others keep their snapshots.
        """
        started = time.perf_counter()
        with self._lock.write():
            stale = self._load_snapshot()
            if stale:
                self._rebuild(stale)
            replayed = self._catch_up()
            # Nothing searches an index that is still opening, so the dense index is rebuilt in place.
            dense = self._local_dense()
            if dense is not None:
                dense.rebuild_if_needed()
        self._sync_entity_names()
        logger.info("index opened", extra={"knowledge_base": self.knowledge_base_id, "chunks": len(self),
                                           "rebuilt": stale, "replayed_changes": replayed,
                                           "ms": round(1000 * (time.perf_counter() - started), 1)})

    def _load_snapshot(self) -> list[str]:
        """Load each retriever's snapshot and return the names of those that must be rebuilt."""
        manifest_path = self.directory / MANIFEST
        if not manifest_path.exists():
            return list(self.retrievers)
        try:
            manifest = json.loads(manifest_path.read_text())
            sequence = int(manifest["sequence"])
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("index manifest unreadable; rebuilding every index from the catalog",
                           extra={"knowledge_base": self.knowledge_base_id, "error": str(error)})
            return list(self.retrievers)
        if manifest.get("embedder") != self.embedder_name or manifest.get("dimension") != self.dimension:
            logger.warning("index snapshot was built with another embedder; rebuilding from stored embeddings",
                           extra={"knowledge_base": self.knowledge_base_id, "snapshot_embedder": manifest.get("embedder")})
            return list(self.retrievers)

        # Manifests written before the graph could be left out name no retrievers, and they cover all three.
        saved = manifest.get("retrievers", list(RETRIEVER_NAMES))
        stale = []
        for name, retriever in self.retrievers.items():
            if name not in saved:
                # Saved while this retriever was left out, so its files, if any, miss the changes since.
                stale.append(name)
                continue
            try:
                retriever.load(self.directory)
            except Exception as error:
                logger.warning("index snapshot missing or unreadable; rebuilding it from the catalog",
                               extra={"knowledge_base": self.knowledge_base_id, "retriever": name, "error": str(error)})
                stale.append(name)
        self.sequence = sequence if len(stale) < len(self.retrievers) else 0
        return stale

    def _rebuild(self, names: list[str]) -> None:
        """Rebuild the named retrievers from every chunk in the catalog, without embedding anything."""
        for name in names:
            self.retrievers[name] = self._new_retriever(name)
        if self._milvus is not None and "bm25" in names:
            # The rows of the collection follow the catalog from scratch, without those of deleted chunks.
            self._milvus.reset(expected_rows=self.catalog.count_documents(self.knowledge_base_id)[1])
        if len(names) == len(self.retrievers):
            self.sequence = self.catalog.last_sequence(self.knowledge_base_id)
        # With some snapshots loaded, the sequence stays theirs: replaying newer changes onto a rebuilt
        # retriever is harmless because every retriever's add replaces and its delete ignores unknown rowids.
        for batch in self.catalog.iter_chunks(self.knowledge_base_id):
            self._add_rows(batch, names)
        self._unsaved_changes = len(self)

    def _catch_up(self) -> int:
        changes = self.catalog.changes_since(self.knowledge_base_id, self.sequence)
        if not changes:
            return 0
        # Later entries win: a chunk added and then deleted in the log is only deleted.
        final: dict[int, str] = {}
        for _, rowid, operation in changes:
            final[rowid] = operation
        deleted = [rowid for rowid, operation in final.items() if operation == "delete"]
        added = [rowid for rowid, operation in final.items() if operation == "add"]
        for retriever in self.retrievers.values():
            retriever.delete(deleted)
        self._add_rows(self.catalog.get_chunks(added))
        self.sequence = changes[-1][0]
        self._unsaved_changes += len(changes)
        return len(changes)

    def _add_rows(self, rows: list[ChunkRow], names: list[str] | None = None) -> None:
        chunks = indexed_chunks(rows)
        for name in names or list(self.retrievers):
            self.retrievers[name].add(chunks)

    def apply_changes(self) -> None:
        """Bring the indices up to the catalog after a write; snapshot when enough changes have piled up.

        When the dense index has crossed its size threshold, this call also rebuilds it, which takes about a
        minute at a million chunks on two cores. Searches and other writes go on meanwhile, and only this caller
        waits.
        """
        self._prepare_graph()
        try:
            with self._lock.write():
                self._catch_up()
                if self._unsaved_changes >= SNAPSHOT_EVERY_CHANGES:
                    self._save()
        finally:
            graph = self._local_graph()
            if graph is not None:
                graph.discard_prepared()
        self._sync_entity_names()
        self._rebuild_dense()

    def _local_dense(self) -> DenseRetriever | None:
        """Return the FAISS dense retriever, or None when Milvus serves dense search and builds its own index."""
        dense = self.retrievers["dense"]
        return dense if isinstance(dense, DenseRetriever) else None

    def _local_graph(self) -> GraphRetriever | None:
        """Return the entity graph, or None when this index leaves it out."""
        return self.retrievers.get("graph")  # type: ignore[return-value]

    def _rebuild_dense(self) -> None:
        """Build a new dense index beside the live one and swap it in, without holding up searches.

        The vectors are copied under the read lock (searches go on, writes wait), the new index is built with
        no lock held, and the writes made meanwhile are replayed onto it under the write lock before the swap.
        """
        if not self._rebuild_lock.acquire(blocking=False):
            return  # another thread is rebuilding; a later write rebuilds again if still needed
        try:
            with self._lock.read():
                dense = self._local_dense()
                rebuild = dense.begin_rebuild() if dense is not None else None
            if rebuild is None:
                return
            try:
                rebuild.build()
            except Exception as error:
                # The writes are in the live index already, so searches stay correct, only slower; the next
                # write tries again.
                with self._lock.write():
                    dense.cancel_rebuild(rebuild)
                logger.error("dense index rebuild failed; searching the current index meanwhile",
                             extra={"knowledge_base": self.knowledge_base_id, "vectors": len(rebuild.rowids),
                                    "error": repr(error)})
                return
            with self._lock.write():
                if self.retrievers["dense"] is dense:
                    dense.finish_rebuild(rebuild)
                else:  # replaced meanwhile (a reopened snapshot); the new retriever needs no swap
                    dense.cancel_rebuild(rebuild)
        finally:
            self._rebuild_lock.release()

    def _prepare_graph(self) -> None:
        """Pick up the knowledge base's current backbone and, when it is capable, have it extract the new chunks'
        entities before the write lock is taken, so searches do not wait for the generator."""
        graph = self._local_graph()
        if self.graph_generator is None or graph is None:
            return
        generator = self.graph_generator(self.knowledge_base_id)
        graph.use_generator(generator)
        if generator is None:
            return
        added = {rowid for _, rowid, operation in self.catalog.changes_since(self.knowledge_base_id, self.sequence)
                 if operation == "add"}
        rows = self.catalog.get_chunks(sorted(added))
        graph.prepare([IndexedChunk(rowid=row.rowid, text=indexed_text(row), embedding=row.embedding)
                       for row in rows])

    def _sync_entity_names(self) -> None:
        """Embed the names of new graph entities outside the write lock; only the comparison takes a read lock."""
        graph = self._local_graph()
        if graph is None:
            return
        try:
            embedded = graph.sync_names(self._lock.read)
        except Exception as error:  # exact and partial name matching still link the query without the vectors
            logger.warning("embedding graph entity names failed", extra={"knowledge_base": self.knowledge_base_id,
                                                                         "error": str(error)})
            return
        if embedded:
            logger.info("graph entity names embedded", extra={"knowledge_base": self.knowledge_base_id,
                                                              "names": embedded})

    def save(self) -> None:
        with self._lock.write():
            self._catch_up()
            self._save()

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for retriever in self.retrievers.values():
            retriever.save(self.directory)
        manifest = {"sequence": self.sequence, "embedder": self.embedder_name, "dimension": self.dimension,
                    "chunks": len(self), "retrievers": list(self.retrievers)}
        temporary = self.directory / (MANIFEST + ".tmp")
        with open(temporary, "w") as handle:
            json.dump(manifest, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / MANIFEST)
        self.catalog.prune_log(self.knowledge_base_id, self.sequence)
        self._unsaved_changes = 0

    def search(self, *, retriever: str, query: str, query_embedding: np.ndarray | None, top_k: int) -> list[Hit]:
        if retriever == "graph":
            self._require_graph()
        with self._lock.read():
            return self.retrievers[retriever].search(query, query_embedding, top_k)

    @property
    def backend(self) -> str:
        return "local" if self._milvus is None else "milvus"

    def _milvus_collection(self, store: MilvusStore, tenant_id: str) -> MilvusCollection:
        return MilvusCollection(store, knowledge_base_id=self.knowledge_base_id, tenant_id=tenant_id,
                                dimension=self.dimension, analyzer=self.analyzer,
                                approximate_threshold=getattr(self, "dense_approximate_threshold",
                                                              DEFAULT_APPROXIMATE_THRESHOLD))

    def use_milvus(self, store: MilvusStore, *, tenant_id: str) -> None:
        """Serve bm25 and dense from this knowledge base's Milvus collection; call before open()."""
        self._milvus = self._milvus_collection(store, tenant_id)
        for name in MILVUS_RETRIEVERS:
            self.retrievers[name] = self._new_retriever(name)

    def migrate_to_milvus(self, store: MilvusStore, *, tenant_id: str) -> int:
        """Copy every chunk and its stored embedding into a new Milvus collection, then serve bm25 and dense
        from it; returns the chunks copied. Nothing is embedded.

        Runs under the write lock, so searches of this knowledge base wait for the copy (about a minute per
        100,000 chunks on milvus-lite). The local snapshots of bm25 and dense are removed afterwards.
        """
        with self._lock.write():
            # Checked again under the lock, because two requests may both have seen the local backend.
            current = self.catalog.get_knowledge_base(self.knowledge_base_id)
            if current is not None and current.backend == "milvus":
                raise AlreadyMigrated(f"knowledge base {current.name!r} is already on the milvus backend")
            self._catch_up()
            collection = self._milvus_collection(store, tenant_id)
            collection.reset(expected_rows=self.catalog.count_documents(self.knowledge_base_id)[1])
            copied = 0
            for batch in self.catalog.iter_chunks(self.knowledge_base_id):
                # One flush at the end: milvus-lite keeps BM25 statistics per flushed segment, so a bulk load
                # in one segment scores like one index.
                collection.add(indexed_chunks(batch), flush=False)
                copied += len(batch)
            collection.save(self.directory)
            self._milvus = collection
            for name in MILVUS_RETRIEVERS:
                self.retrievers[name] = self._new_retriever(name)
            self.catalog.set_knowledge_base_backend(self.knowledge_base_id, "milvus")
            self._save()
            for leftover in ("bm25.npz", "dense.faiss"):
                (self.directory / leftover).unlink(missing_ok=True)
        return copied

    def _require_graph(self) -> GraphRetriever:
        graph = self._local_graph()
        if graph is None:
            raise GraphIndexOff("graph retrieval, global queries and the /graph routes are turned off on this "
                                "service (DOMAINRAG_GRAPH_INDEX=false), which keeps no entity graph. Search with "
                                "'bm25' and 'dense' instead.")
        return graph

    @property
    def graph(self) -> GraphRetriever:
        """The entity graph; raises GraphIndexOff when this index leaves it out."""
        return self._require_graph()

    def find_entities(self, query: str, *, limit: int) -> list[EntityInfo]:
        with self._lock.read():
            return self.graph.find_entities(query, limit=limit)

    def communities(self) -> tuple[list[Community], bool]:
        """Return the graph's summarised communities and whether a newer partition is being computed."""
        with self._lock.read():
            return self.graph.communities(), self.graph.computing_communities

    def global_search(self, query: str, top_k: int) -> tuple[list[CommunityHit], bool]:
        """Return the community summaries that best match a broad question, and whether a partition is running.

        A capable backbone rewrites the summaries after the read lock is released, because each is a generator call.
        """
        with self._lock.read():
            graph = self.graph
            hits, computing = graph.global_search(query, top_k), graph.computing_communities
        return graph.write_summaries(hits), computing


class IndexRegistry:
    """Opens each knowledge base's indices once per process and hands out the shared instance."""

    def __init__(self, *, catalog: Catalog, root: Path, dimension: int, embedder_name: str,
                 dense_approximate_threshold: int = DEFAULT_APPROXIMATE_THRESHOLD, embedder: Embedder | None = None,
                 graph_generator: GraphGeneratorResolver | None = None, graph_index: bool = True) -> None:
        self.catalog = catalog
        self.embedder = embedder
        self.graph_index = graph_index
        self.graph_generator = graph_generator
        self.root = root
        self.dimension = dimension
        self.embedder_name = embedder_name
        self.dense_approximate_threshold = dense_approximate_threshold
        self.analyzer = Analyzer()
        self._indices: dict[str, KnowledgeBaseIndex] = {}
        self._opening: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # The Milvus deployment for knowledge bases whose backend is "milvus"; set by build_services.
    milvus: MilvusStore | None = None

    def _attach_backend(self, index: KnowledgeBaseIndex) -> None:
        knowledge_base = next((kb for kb in self.catalog.all_knowledge_bases()
                               if kb.id == index.knowledge_base_id), None)
        if knowledge_base is not None and knowledge_base.backend == "milvus":
            if self.milvus is None:
                raise RuntimeError(f"knowledge base {knowledge_base.id} is on Milvus, but no Milvus is configured")
            index.use_milvus(self.milvus, tenant_id=knowledge_base.tenant_id)

    def migrate(self, knowledge_base_id: str, *, tenant_id: str) -> int:
        """Move a knowledge base's bm25 and dense indices onto Milvus; returns the chunks copied."""
        if self.milvus is None:
            raise RuntimeError("no Milvus is configured")
        return self.get(knowledge_base_id).migrate_to_milvus(self.milvus, tenant_id=tenant_id)

    def close(self) -> None:
        if self.milvus is not None:
            self.milvus.close()

    def directory(self, knowledge_base_id: str) -> Path:
        # Built from the internal id only, never from a name a client sent.
        return self.root / knowledge_base_id / "index"

    def get(self, knowledge_base_id: str) -> KnowledgeBaseIndex:
        with self._lock:
            index = self._indices.get(knowledge_base_id)
            if index is not None:
                return index
            opening = self._opening.setdefault(knowledge_base_id, threading.Lock())
        # Opening a large knowledge base takes seconds; only requests for that one wait for it.
        with opening:
            with self._lock:
                index = self._indices.get(knowledge_base_id)
            if index is None:
                index = KnowledgeBaseIndex(knowledge_base_id=knowledge_base_id,
                                           directory=self.directory(knowledge_base_id), catalog=self.catalog,
                                           dimension=self.dimension, embedder_name=self.embedder_name,
                                           analyzer=self.analyzer,
                                           dense_approximate_threshold=self.dense_approximate_threshold,
                                           embedder=self.embedder, graph_generator=self.graph_generator,
                                           graph_index=self.graph_index)
                self._attach_backend(index)
                index.open()
                with self._lock:
                    self._indices[knowledge_base_id] = index
                    self._opening.pop(knowledge_base_id, None)
            return index

    def drop(self, knowledge_base_id: str, backend: str = "local") -> None:
        with self._lock:
            self._indices.pop(knowledge_base_id, None)
        shutil.rmtree(self.root / knowledge_base_id, ignore_errors=True)
        if backend == "milvus" and self.milvus is not None:
            self.milvus.drop(knowledge_base_id)

    def save_all(self) -> None:
        with self._lock:
            indices = list(self._indices.values())
        for index in indices:
            index.save()
