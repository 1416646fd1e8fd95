"""Measure ingestion throughput, search latency and index memory against corpus size, in one process.

Three parts; the first prints its own table and the other two share one:

1. Ingestion: the service's own ingestion job on the first --ingest-documents SciFact abstracts with the real
   MiniLM embedder, then the same embedder alone on exactly the chunk texts the job embedded, in the same
   batches. The ratio of the two throughputs is the pipeline's overhead.
2. Scale: a corpus grown through --sizes (default 10k, 100k, 1M chunks). Chunk text is drawn word by word
   from SciFact's own word frequencies. Chunk vectors perturb real MiniLM embeddings of SciFact chunks (the
   ones part 1 produced), because embedding a million real chunks on two cores would take hours. Queries
   are the real SciFact queries and their MiniLM embeddings. At each size this project's BM25 and dense
   retrievers run beside rank-bm25 (up to --rank-bm25-max-size, since it scores every document in Python)
   and a plain FAISS `IndexFlatIP`, so ratios stay comparable on a noisy machine. Fused search is what the
   service does for a search with both retrievers: embed the query, take 100 hits from each, fuse by RRF.
   It leaves out the catalog lookup of the final hits.
3. Rerank: at the smallest size only, fused search followed by the LLM reranker on 20 candidates, for
   --rerank-queries queries (0 skips it; it loads the default generator backbone).

"memory MiB" of this project's engines is the growth of resident memory while they indexed, so it includes
Python objects such as the rowid map, and at small sizes it is mostly allocator noise. For IndexFlatIP it is
the vector storage, computed.

    python -m benchmarks.scale --sizes 10000 100000 1000000 --plot scale.png --json scale.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from benchmarks.common import SHARED_DATA_DIR, SyntheticCorpus, format_table, read_jsonl
from benchmarks.ingest_throughput import run as run_ingestion
from retrievers.base import IndexedChunk
from retrievers.bm25 import BM25Retriever
from retrievers.dense import DenseRetriever
from retrievers.embedders import Embedder, load_embedder
from retrievers.fusion import reciprocal_rank_fusion
from retrievers.text import Analyzer

logger = logging.getLogger("benchmarks.scale")

# The service requests this many candidates from each retriever before fusion (app.rag.FUSION_DEPTH).
FUSION_DEPTH = 100
RERANK_CANDIDATES = 20
BATCH_CHUNKS = 50_000
WARM_UP_QUERIES = 5
EMPTY_EMBEDDING = np.zeros(1, dtype=np.float32)


@dataclass
class Engine:
    """Latencies of one engine at one corpus size, in milliseconds, with what it took to build."""

    size: int
    engine: str
    latencies_ms: list[float]
    build_s: float = float("nan")
    memory_mib: float = float("nan")
    recall_at_10: float = float("nan")
    extra: dict = field(default_factory=dict)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {"size": self.size, "engine": self.engine, "p50_ms": self.percentile(50),
                "p95_ms": self.percentile(95), "p99_ms": self.percentile(99), "build_s": self.build_s,
                "memory_mib": self.memory_mib, "recall@10_vs_exact": self.recall_at_10, "queries": len(self.latencies_ms),
                **self.extra}


def resident_mib() -> float:
    """Return this process's resident set size in MiB (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def time_queries(run: Callable[[int], object], count: int) -> list[float]:
    """Call run(i) for each query index after a short warm-up and return the latencies in milliseconds."""
    for i in range(min(WARM_UP_QUERIES, count)):
        run(i)
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        run(i)
        latencies.append(1000 * (time.perf_counter() - started))
    return latencies


def measure_ingestion(corpus_path: Path, documents: int, embedder: Embedder) -> tuple[dict, list[list[str]]]:
    """Ingest SciFact abstracts through the service's job, then embed the same chunk texts alone."""
    with tempfile.TemporaryDirectory(prefix="domainrag-scale-") as data_dir:
        result, timed = run_ingestion(corpus_path, documents, Path(data_dir), embedder=embedder)
    batches = timed.batches
    texts = sum(len(batch) for batch in batches)

    started = time.perf_counter()
    for batch in batches:
        embedder.embed(batch)
    alone_s = time.perf_counter() - started

    pipeline_chunks_per_second = result["chunks"] / result["seconds"]
    embedder_chunks_per_second = texts / alone_s
    summary = {"documents": result["documents"], "chunks": result["chunks"], "pipeline_s": result["seconds"],
               "documents_per_second": result["documents_per_second"],
               "chunks_per_second": round(pipeline_chunks_per_second, 2),
               "embedder_share_of_pipeline": round(1 - result["share_outside_embedder"], 4),
               "embedder_alone_s": round(alone_s, 1),
               "embedder_alone_chunks_per_second": round(embedder_chunks_per_second, 2),
               "pipeline_vs_embedder_alone": round(pipeline_chunks_per_second / embedder_chunks_per_second, 4)}
    return summary, batches


class ScaleRun:
    """Grows every engine through the sizes and measures each one at each size."""

    def __init__(self, corpus: SyntheticCorpus, queries: list[str], query_vectors: np.ndarray,
                 embedder: Embedder, *, rank_bm25_max_size: int, rank_bm25_queries: int) -> None:
        self.corpus = corpus
        self.queries = queries
        self.query_vectors = query_vectors
        self.embedder = embedder
        self.rank_bm25_max_size = rank_bm25_max_size
        self.rank_bm25_queries = rank_bm25_queries
        dimension = query_vectors.shape[1]
        self.bm25 = BM25Retriever(analyzer=Analyzer())
        self.dense = DenseRetriever(dimension)
        self.flat = faiss.IndexFlatIP(dimension)
        self.reference_texts: list[str] = []
        self.size = 0
        self.build_s = {"bm25": 0.0, "dense": 0.0, "flat": 0.0}
        self.memory_mib = {"bm25": 0.0, "dense": 0.0}

    def grow_to(self, size: int) -> None:
        while self.size < size:
            count = min(BATCH_CHUNKS, size - self.size)
            rowids = np.arange(self.size, self.size + count, dtype=np.int64)
            texts = self.corpus.texts(count)
            if self.size + count <= self.rank_bm25_max_size:
                self.reference_texts.extend(texts)
            chunks = [IndexedChunk(rowid=int(rowid), text=text, embedding=EMPTY_EMBEDDING)
                      for rowid, text in zip(rowids, texts)]
            self._timed("bm25", lambda: self.bm25.add(chunks))
            del chunks, texts

            vectors = self.corpus.vectors(count)
            self._timed("dense", lambda: self.dense.add_vectors(rowids, vectors))
            started = time.perf_counter()
            self.flat.add(vectors)
            self.build_s["flat"] += time.perf_counter() - started
            del vectors
            self.size += count
        # The first search turns the BM25 buffer into a segment; count that as building.
        self._timed("bm25", lambda: self.bm25.search("warm", None, 1))
        logger.info("corpus grown to %d chunks", self.size)

    def _timed(self, engine: str, work: Callable[[], object]) -> None:
        gc.collect()
        before = resident_mib()
        started = time.perf_counter()
        work()
        self.build_s[engine] += time.perf_counter() - started
        self.memory_mib[engine] += resident_mib() - before

    def measure(self, query_count: int) -> list[Engine]:
        size = self.size
        count = min(query_count, len(self.queries))
        engines = []

        bm25 = Engine(size, "bm25 (domainrag)", time_queries(
            lambda i: self.bm25.search(self.queries[i], None, FUSION_DEPTH), count),
            build_s=self.build_s["bm25"], memory_mib=self.memory_mib["bm25"])
        engines.append(bm25)
        if size <= self.rank_bm25_max_size:
            engines.append(self._measure_rank_bm25(bm25))

        exact = [self.flat.search(self.query_vectors[i:i + 1], 10)[1][0] for i in range(count)]
        dense = Engine(size, "dense (domainrag)", time_queries(
            lambda i: self.dense.search("", self.query_vectors[i], FUSION_DEPTH), count),
            build_s=self.build_s["dense"], memory_mib=self.memory_mib["dense"],
            extra={"index": type(self.dense._index).__name__})
        found = sum(len(set(exact[i]) & {hit.rowid for hit in self.dense.search("", self.query_vectors[i], 10)})
                    for i in range(count))
        dense.recall_at_10 = found / (10 * count)
        engines.append(dense)
        flat = Engine(size, "faiss IndexFlatIP", time_queries(
            lambda i: self.flat.search(self.query_vectors[i:i + 1], FUSION_DEPTH), count),
            build_s=self.build_s["flat"], memory_mib=self.flat.ntotal * self.flat.d * 4 / 2**20, recall_at_10=1.0)
        engines.append(flat)
        engines.append(Engine(size, "fused (domainrag)", time_queries(self.fused_search, count)))

        bm25.extra["speedup_vs_rank_bm25"] = next(
            (engine.percentile(50) / bm25.percentile(50) for engine in engines if engine.engine == "rank-bm25"), None)
        dense.extra["speedup_vs_flat"] = flat.percentile(50) / dense.percentile(50)
        return engines

    def fused_search(self, i: int, cut: int = 10) -> list:
        query = self.queries[i]
        vector = self.embedder.embed([query], is_query=True)[0]
        rankings = {"bm25": self.bm25.search(query, None, FUSION_DEPTH),
                    "dense": self.dense.search(query, vector, FUSION_DEPTH)}
        return reciprocal_rank_fusion(rankings)[:cut]

    def _measure_rank_bm25(self, ours: Engine) -> Engine:
        from rank_bm25 import BM25Okapi

        analyzer = self.bm25.analyzer
        started = time.perf_counter()
        reference = BM25Okapi([analyzer.terms(text) for text in self.reference_texts])
        build_s = time.perf_counter() - started
        query_terms = [analyzer.terms(query) for query in self.queries]

        def search(i: int) -> np.ndarray:
            scores = reference.get_scores(query_terms[i])
            return np.argpartition(-scores, FUSION_DEPTH)[:FUSION_DEPTH]

        count = min(self.rank_bm25_queries, len(self.queries))
        engine = Engine(self.size, "rank-bm25", time_queries(search, count), build_s=build_s)
        del reference
        return engine


def measure_rerank(run: ScaleRun, query_count: int) -> Engine | None:
    """Time fused search plus the LLM reranker on 20 candidates, with the service's default generator."""
    from app.settings import Settings
    from generation.registry import GeneratorPool
    from retrievers.rerank import LLMReranker, rerank

    settings = Settings()
    try:
        generator = GeneratorPool(settings.all_backbones, default=settings.generator,
                                  cache_root=settings.data_dir / "models").get()
    except Exception as error:
        logger.warning("rerank skipped: the default generator failed to load: %s", error)
        return None
    reranker = LLMReranker(generator)

    def search_and_rerank(i: int) -> None:
        fused = run.fused_search(i, cut=RERANK_CANDIDATES)
        rerank(reranker, run.queries[i], [run.reference_texts[hit.rowid] for hit in fused])

    return Engine(run.size, f"fused + LLM rerank of {RERANK_CANDIDATES}", time_queries(search_and_rerank, query_count))


def load_queries(data: Path) -> list[str]:
    return [record["text"] for record in read_jsonl(data / "queries.jsonl")]


def plot(engines: list[Engine], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(engine.engine for engine in engines):
        points = sorted((engine.size, engine.percentile(50)) for engine in engines if engine.engine == name)
        axis.plot([size for size, _ in points], [p50 for _, p50 in points], marker="o", label=name)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("corpus size (chunks)")
    axis.set_ylabel("search latency p50 (ms)")
    axis.set_title("Search latency against corpus size")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    logger.info("wrote %s", path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=SHARED_DATA_DIR / "scifact",
                        help="SciFact directory with corpus.jsonl and queries.jsonl (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="corpus sizes in chunks, ascending (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per engine and size (default: %(default)s)")
    parser.add_argument("--ingest-documents", type=int, default=500,
                        help="SciFact abstracts ingested in part 1; their chunk embeddings seed the synthetic "
                        "vectors (default: %(default)s)")
    parser.add_argument("--rank-bm25-max-size", type=int, default=100_000,
                        help="largest size at which rank-bm25 is built (default: %(default)s)")
    parser.add_argument("--rank-bm25-queries", type=int, default=50,
                        help="queries timed on rank-bm25, which takes 0.1-1 s each at 100k chunks (default: %(default)s)")
    parser.add_argument("--rerank-queries", type=int, default=5,
                        help="queries timed with the LLM reranker at the smallest size; 0 skips it (default: %(default)s)")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--plot", type=Path, default=Path("scale.png"), help="PNG of p50 latency against size")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.sizes != sorted(args.sizes) or args.sizes[0] < 1:
        parser.error(f"--sizes must be positive and ascending, got {args.sizes}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    embedder = load_embedder("minilm")
    embedder.embed(["warm up the embedder"])

    logger.info("part 1: ingesting %d SciFact abstracts", args.ingest_documents)
    ingestion, batches = measure_ingestion(args.data / "corpus.jsonl", args.ingest_documents, embedder)
    base_vectors = embedder.embed([text for batch in batches for text in batch])
    print(format_table(list(ingestion), [list(ingestion.values())]))

    queries = load_queries(args.data)
    query_vectors = embedder.embed(queries, is_query=True)
    corpus = SyntheticCorpus(args.data / "corpus.jsonl", base_vectors)
    run = ScaleRun(corpus, queries, query_vectors, embedder, rank_bm25_max_size=args.rank_bm25_max_size,
                   rank_bm25_queries=args.rank_bm25_queries)
    engines: list[Engine] = []
    for size in args.sizes:
        logger.info("part 2: growing the corpus to %d chunks", size)
        run.grow_to(size)
        engines.extend(run.measure(args.queries))
        if size == args.sizes[0] and args.rerank_queries and size <= args.rank_bm25_max_size:
            reranked = measure_rerank(run, args.rerank_queries)
            if reranked is not None:
                engines.append(reranked)

    rows = [engine.row() for engine in engines]
    columns = ["size", "engine", "p50_ms", "p95_ms", "p99_ms", "build_s", "memory_mib", "recall@10_vs_exact", "queries"]
    print(format_table(["size", "engine", "p50 ms", "p95 ms", "p99 ms", "build s", "memory MiB",
                        "recall@10 vs exact", "queries"],
                       [[row[column] for column in columns] for row in rows]))
    for row in rows:
        if row.get("speedup_vs_rank_bm25") is not None:
            print(f"{row['size']:>9} chunks: p50 of rank-bm25 / p50 of domainrag BM25 = {row['speedup_vs_rank_bm25']:.1f}")
        if row.get("speedup_vs_flat") is not None:
            print(f"{row['size']:>9} chunks: p50 of IndexFlatIP / p50 of domainrag dense ({row['index']}) = "
                  f"{row['speedup_vs_flat']:.1f}")
    plot(engines, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"ingestion": ingestion, "scale": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
