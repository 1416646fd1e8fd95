"""Compare BM25 engines in one process on SciFact: this project's inverted index, rank-bm25 and bm25s.

All three get the same analysed terms (Unicode words, English stop words removed, Snowball stems), so the
table isolates the engines: indexing time, median query latency and nDCG@10 over the split's queries.

    python -m benchmarks.bm25_engines --data ../shared/data/scifact --split train
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from benchmarks.common import format_table, read_jsonl
from benchmarks.metrics import ndcg_at_k
from retrievers.base import IndexedChunk
from retrievers.bm25 import BM25Retriever
from retrievers.text import Analyzer

REPOSITORY = Path(__file__).resolve().parent.parent


def load(data: Path, split: str):
    corpus = list(read_jsonl(data / "corpus.jsonl"))
    queries = {row["_id"]: row["text"] for row in read_jsonl(data / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    for line in (data / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]:
        query_id, document_id, score = line.split("\t")
        qrels.setdefault(query_id, {})[document_id] = int(score)
    return corpus, {query_id: queries[query_id] for query_id in qrels}, qrels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPOSITORY.parent / "shared" / "data" / "scifact")
    parser.add_argument("--split", default="train")
    args = parser.parse_args()

    corpus, queries, qrels = load(args.data, args.split)
    analyzer = Analyzer()
    texts = [f"{row.get('title', '')}\n{row['text']}" for row in corpus]
    ids = [row["_id"] for row in corpus]
    query_terms = {query_id: analyzer.terms(text) for query_id, text in queries.items()}
    rows = []

    started = time.perf_counter()
    ours = BM25Retriever(analyzer=analyzer)
    ours.add([IndexedChunk(rowid=i, text=text, embedding=np.zeros(1, dtype=np.float32)) for i, text in enumerate(texts)])
    ours.search("warm up", None, 1)
    index_seconds = time.perf_counter() - started

    def run_ours(query_id: str) -> list[str]:
        return [ids[hit.rowid] for hit in ours.search(queries[query_id], None, 10)]

    rows.append(("domainrag inverted index", index_seconds, *evaluate(run_ours, queries, qrels)))

    tokenized = [analyzer.terms(text) for text in texts]
    started = time.perf_counter()
    reference = BM25Okapi(tokenized)
    index_seconds = time.perf_counter() - started

    def run_reference(query_id: str) -> list[str]:
        scores = reference.get_scores(query_terms[query_id])
        return [ids[i] for i in np.argsort(-scores)[:10]]

    rows.append(("rank-bm25 BM25Okapi", index_seconds, *evaluate(run_reference, queries, qrels)))

    try:
        import bm25s
    except ImportError:
        bm25s = None
    if bm25s is not None:
        started = time.perf_counter()
        engine = bm25s.BM25()
        engine.index(tokenized, show_progress=False)
        index_seconds = time.perf_counter() - started

        def run_bm25s(query_id: str) -> list[str]:
            documents, _ = engine.retrieve([query_terms[query_id] or ["<empty>"]], k=10, show_progress=False)
            return [ids[i] for i in documents[0]]

        rows.append(("bm25s", index_seconds, *evaluate(run_bm25s, queries, qrels)))

    baseline = rows[1][3]
    print(format_table(["engine", "index s", "nDCG@10", "median query ms", "speed vs rank-bm25"],
                       [(name, f"{index:.2f}", f"{ndcg:.4f}", f"{median:.3f}", f"{baseline / median:.1f}x")
                        for name, index, ndcg, median in rows]))
    return 0


def evaluate(run, queries, qrels) -> tuple[float, float]:
    scores, latencies = [], []
    for query_id in queries:
        started = time.perf_counter()
        ranking = run(query_id)
        latencies.append(1000 * (time.perf_counter() - started))
        scores.append(ndcg_at_k(ranking, qrels[query_id], 10))
    return statistics.fmean(scores), statistics.median(latencies)


if __name__ == "__main__":
    raise SystemExit(main())
