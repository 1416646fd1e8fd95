"""Search latency of the local and the Milvus index backends at one corpus size, side by side in one process.

The corpus is benchmarks/scale.py's synthetic one: chunk text drawn word by word from SciFact's word
frequencies, chunk vectors that perturb real MiniLM embeddings of SciFact chunks. The real embeddings are read
from a catalog that already holds an ingested SciFact knowledge base (`--catalog`), so nothing is embedded but
the queries. Both backends index the same chunks: the local BM25 and FAISS retrievers, and one Milvus
collection written and searched by the service's own `MilvusCollection` (milvus-lite for a `.db` path, or a
server URL). Each engine answers the same SciFact queries with 100 hits, as the service asks of each
retriever before fusion; "fused" is BM25 plus dense plus RRF with the query vector already computed, so the
figures leave out query embedding (the same for both backends) and HTTP.

    python -m benchmarks.milvus_scale --size 100000 --catalog /tmp/milvus-data/catalog.sqlite3 --json m.json
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import SHARED_DATA_DIR, format_table, read_jsonl
from benchmarks.scale import FUSION_DEPTH, SyntheticCorpus, time_queries
from retrievers.base import IndexedChunk
from retrievers.bm25 import BM25Retriever
from retrievers.dense import DenseRetriever
from retrievers.fusion import reciprocal_rank_fusion
from retrievers.milvus import MilvusCollection, MilvusStore
from retrievers.text import Analyzer
from storage.catalog import Catalog

logger = logging.getLogger("benchmarks.milvus_scale")
BATCH_CHUNKS = 10_000
MAX_BASE_VECTORS = 20_000


def base_vectors(catalog_path: Path) -> np.ndarray:
    catalog = Catalog(catalog_path)
    vectors = []
    for knowledge_base in catalog.all_knowledge_bases():
        for batch in catalog.iter_chunks(knowledge_base.id):
            vectors.extend(row.embedding for row in batch)
            if len(vectors) >= MAX_BASE_VECTORS:
                return np.vstack(vectors)
    if not vectors:
        raise SystemExit(f"{catalog_path} holds no chunks to take embeddings from")
    return np.vstack(vectors)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR / "scifact", help="SciFact BEIR directory")
    parser.add_argument("--catalog", type=Path, required=True,
                        help="catalog.sqlite3 of a data directory with ingested SciFact, for real chunk embeddings")
    parser.add_argument("--size", type=int, default=100_000, help="chunks in the corpus (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per engine (default: %(default)s)")
    parser.add_argument("--milvus-uri", help="Milvus URI (default: a milvus-lite file in a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from retrievers.embedders import load_embedder

    bases = base_vectors(args.catalog)
    queries = [record["text"] for record in read_jsonl(args.data / "queries.jsonl")][:args.queries]
    embedder = load_embedder("minilm")
    query_vectors = embedder.embed(queries, is_query=True)
    dimension = query_vectors.shape[1]
    logger.info("%d base vectors, %d queries", len(bases), len(queries))

    corpus = SyntheticCorpus(args.data / "corpus.jsonl", bases)
    analyzer = Analyzer()
    bm25, dense = BM25Retriever(analyzer=analyzer), DenseRetriever(dimension)
    with tempfile.TemporaryDirectory(prefix="domainrag-milvus-scale-") as folder:
        store = MilvusStore(args.milvus_uri or str(Path(folder) / "milvus.db"))
        collection = MilvusCollection(store, knowledge_base_id="kb_scale_benchmark", tenant_id="tnt_scale_benchmark",
                                      dimension=dimension, analyzer=analyzer)
        collection.reset(expected_rows=args.size)
        build = {"local": 0.0, "milvus": 0.0}
        for start in range(0, args.size, BATCH_CHUNKS):
            count = min(BATCH_CHUNKS, args.size - start)
            texts, vectors = corpus.texts(count), corpus.vectors(count)
            chunks = [IndexedChunk(rowid=start + i + 1, text=texts[i], embedding=vectors[i],
                                   document_id=f"doc-{start + i + 1}", chunk_id=f"doc-{start + i + 1}#0")
                      for i in range(count)]
            started = time.perf_counter()
            bm25.add(chunks)
            dense.add(chunks)
            build["local"] += time.perf_counter() - started
            started = time.perf_counter()
            # Flushed once at the end, as `domainrag migrate` loads a knowledge base: one segment.
            collection.add(chunks, flush=False)
            build["milvus"] += time.perf_counter() - started
            logger.info("indexed %d chunks (local %.0f s, milvus %.0f s)", start + count, build["local"],
                        build["milvus"])
        started = time.perf_counter()
        bm25.search("warm", None, 1)
        build["local"] += time.perf_counter() - started
        started = time.perf_counter()
        collection.save(Path(folder))
        build["milvus"] += time.perf_counter() - started

        def fused(search_bm25, search_dense):
            def run(i: int):
                return reciprocal_rank_fusion({"bm25": search_bm25(i), "dense": search_dense(i)})[:10]
            return run

        engines = {
            ("local", "bm25"): lambda i: bm25.search(queries[i], None, FUSION_DEPTH),
            ("local", "dense"): lambda i: dense.search("", query_vectors[i], FUSION_DEPTH),
            ("milvus", "bm25"): lambda i: collection.search_bm25(queries[i], FUSION_DEPTH),
            ("milvus", "dense"): lambda i: collection.search_dense(query_vectors[i], FUSION_DEPTH),
        }
        engines[("local", "fused")] = fused(engines[("local", "bm25")], engines[("local", "dense")])
        engines[("milvus", "fused")] = fused(engines[("milvus", "bm25")], engines[("milvus", "dense")])
        rows = []
        for (backend, retriever), run in engines.items():
            latencies = time_queries(run, len(queries))
            row = {"size": args.size, "backend": backend, "retriever": retriever,
                   "p50_ms": round(float(np.percentile(latencies, 50)), 2),
                   "p95_ms": round(float(np.percentile(latencies, 95)), 2), "build_s": round(build[backend], 1),
                   "queries": len(latencies)}
            if backend == "milvus" and retriever in ("bm25", "dense"):
                agree = [len({h.rowid for h in run(i)[:10]} & {h.rowid for h in engines[("local", retriever)](i)[:10]})
                         / 10 for i in range(len(queries))]
                row["top10_overlap_with_local"] = round(float(np.mean(agree)), 4)
            rows.append(row)
            logger.info("%s", row)
        store.close()

    columns = ["size", "backend", "retriever", "p50_ms", "p95_ms", "build_s", "top10_overlap_with_local"]
    print(format_table(columns, [[row.get(column, "") for column in columns] for row in rows]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
