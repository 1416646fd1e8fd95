"""Measure retrieval quality on SciFact through the /search endpoint.

Uploads the SciFact corpus (title and text of 5,183 abstracts, BEIR format) and runs
every query of the split's qrels through /search for each retriever configuration.
Chunk hits are deduplicated to documents in order of first appearance before scoring.

Example:
    python -m benchmarks.scifact --url http://127.0.0.1:8000 --admin-key "$DOMAINRAG_ADMIN_KEY"
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.client import DomainRagClient
from evaluation.datasets import RetrievalDataset
from evaluation.runner import evaluate_retrieval
from benchmarks.common import (
    SHARED_DATA_DIR,
    add_retriever_argument,
    add_service_arguments,
    configure_logging,
    connect_and_ingest,
    format_table,
    read_jsonl,
    run_reporting_errors,
    write_json,
)

logger = logging.getLogger("benchmarks.scifact")

COLUMNS = ["retrievers", "rerank", "nDCG@10", "recall@10", "recall@100", "MRR@10", "queries", "median ms",
           "median rerank ms"]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (query-id, corpus-id, score, with a header line)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file, delimiter="\t")
        for line_number, row in enumerate(reader, start=1):
            if not row:
                continue
            if line_number == 1 and row[0] == "query-id":
                continue
            if len(row) != 3:
                raise ValueError(f"{path}:{line_number}: expected 3 tab-separated fields, got {row!r}")
            query_id, document_id, score = row
            qrels.setdefault(query_id, {})[document_id] = int(score)
    return qrels


def corpus_documents(path: Path) -> Iterator[dict[str, Any]]:
    for record in read_jsonl(path):
        yield {"id": record["_id"], "title": record.get("title", ""), "text": record["text"]}


def evaluate(
    client: DomainRagClient,
    kb: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    retrievers: list[str],
    top_k: int,
    rerank: str = "none",
) -> dict[str, Any]:
    """Run every query with one retriever configuration and rerank mode and return the averaged metrics.

    The scoring is `domainrag eval`'s own, so both report the same figures for the same service.
    """
    dataset = RetrievalDataset(name="scifact", corpus_path=Path("corpus.jsonl"), queries=queries, qrels=qrels)
    row = evaluate_retrieval(client, kb, dataset, retrievers, top_k=top_k, rerank=rerank)
    # recall@100 counts only the documents inside the top_k chunks, which can be fewer than
    # 100 when a document has several chunks. The minimum count shows how far short it falls.
    row["min_documents_returned"] = row.pop("fewest_documents_returned")
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure nDCG@10, recall and MRR on SciFact through a running domainrag service."
    )
    add_service_arguments(parser, default_kb="scifact")
    add_retriever_argument(parser)
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA_DIR / "scifact",
        help="directory with corpus.jsonl, queries.jsonl and qrels/ (default: %(default)s)",
    )
    parser.add_argument("--split", default="train", help="qrels split, read from qrels/SPLIT.tsv (default: %(default)s)")
    parser.add_argument(
        "--top-k",
        type=int,
        default=100,
        help="chunks requested per search, before deduplication to documents (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N queries of the split")
    parser.add_argument(
        "--rerank",
        nargs="+",
        choices=["none", "llm", "cross-encoder"],
        default=["none"],
        help="rerank modes to evaluate, one table row each per retriever configuration (default: none)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result rows to PATH as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 10:
        parser.error(f"--top-k must be at least 10 to compute the @10 metrics, got {args.top_k}")
    configure_logging()
    return run_reporting_errors(run, args)


def run(args: argparse.Namespace) -> int:
    queries = {record["_id"]: record["text"] for record in read_jsonl(args.data / "queries.jsonl")}
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    missing = [query_id for query_id in qrels if query_id not in queries]
    if missing:
        raise SystemExit(f"error: {len(missing)} qrels query ids are missing from queries.jsonl, e.g. {missing[:5]}")
    if args.limit is not None:
        qrels = dict(list(qrels.items())[: args.limit])
    logger.info("loaded %d queries with qrels from split %s", len(qrels), args.split)

    with connect_and_ingest(args, corpus_documents(args.data / "corpus.jsonl")) as client:
        rows = []
        for retrievers in args.retrievers:
            for rerank in args.rerank:
                logger.info("evaluating retrievers %s with rerank %s", ",".join(retrievers), rerank)
                rows.append(evaluate(client, args.kb, queries, qrels, retrievers, args.top_k, rerank))

    metric_names = ["rerank", "ndcg@10", "recall@10", "recall@100", "mrr@10", "queries", "median_ms"]
    table_rows = [
        [row["retrievers"], *(row[name] for name in metric_names), row.get("median_rerank_ms", 0.0)] for row in rows
    ]
    print(format_table(COLUMNS, table_rows))
    if any(row["min_documents_returned"] < 100 for row in rows):
        print(
            f"NOTE: some searches returned fewer than 100 documents from {args.top_k} chunks, "
            "so recall@100 counts only those. Raise --top-k to cover more."
        )
    if args.json:
        write_json(args.json, {"dataset": "scifact", "split": args.split, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
