"""Measure multi-hop retrieval on 2WikiMultiHopQA or MuSiQue through the /search endpoint.

Uploads the dataset's passages (title and text) and sends every question to /search for each retriever
configuration. Chunk hits are deduplicated to passages in order of first appearance, and the table reports
recall@2 and recall@5 of each question's gold passages, averaged over questions (the HippoRAG protocol).

Example:
    python -m benchmarks.multihop --dataset 2wiki --url http://127.0.0.1:8000 --admin-key "$DOMAINRAG_ADMIN_KEY"
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.client import DomainRagClient
from benchmarks import metrics
from benchmarks.common import (
    SHARED_DATA_DIR,
    add_service_arguments,
    configure_logging,
    connect_and_ingest,
    format_table,
    median_ms,
    parse_retriever_config,
    read_jsonl,
    run_reporting_errors,
    write_json,
)

logger = logging.getLogger("benchmarks.multihop")

DATASETS = ("2wiki", "musique")
COLUMNS = ["retrievers", "recall@2", "recall@5", "questions", "median ms"]
DEFAULT_CONFIGURATIONS = [["bm25"], ["dense"], ["graph"], ["bm25", "dense"], ["bm25", "dense", "graph"]]


def corpus_documents(path: Path) -> Iterator[dict[str, Any]]:
    for record in read_jsonl(path):
        yield {"id": record["_id"], "title": record.get("title", ""), "text": record["text"]}


def evaluate(client: DomainRagClient, kb: str, questions: list[dict[str, Any]], retrievers: list[str],
             top_k: int) -> dict[str, Any]:
    """Run every question with one retriever configuration and return the averaged recalls."""
    recalls: dict[str, list[float]] = {"recall@2": [], "recall@5": []}
    latencies_s: list[float] = []
    for question in questions:
        started = time.perf_counter()
        response = client.search(kb, question["question"], top_k=top_k, retrievers=retrievers)
        latencies_s.append(time.perf_counter() - started)

        ranking = metrics.dedupe_documents(response["hits"])
        gold = {document_id: 1 for document_id in question["gold_docs"]}
        recalls["recall@2"].append(metrics.recall_at_k(ranking, gold, 2))
        recalls["recall@5"].append(metrics.recall_at_k(ranking, gold, 5))

    row: dict[str, Any] = {"retrievers": ",".join(retrievers)}
    row.update({name: statistics.fmean(values) for name, values in recalls.items()})
    row["questions"] = len(latencies_s)
    row["median_ms"] = median_ms(latencies_s)
    return row


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure recall@2 and recall@5 of gold passages on a multi-hop dataset through a running "
        "domainrag service."
    )
    parser.add_argument("--dataset", choices=DATASETS, required=True,
                        help="dataset to read from ../shared/data/DATASET, also the default knowledge base name")
    add_service_arguments(parser, default_kb="")
    parser.add_argument(
        "--retrievers",
        nargs="+",
        type=parse_retriever_config,
        default=DEFAULT_CONFIGURATIONS,
        metavar="CONFIG",
        help="retriever configurations to evaluate, one table row each. Join retrievers with commas to fuse "
        "them (default: bm25 dense graph bm25,dense bm25,dense,graph)",
    )
    parser.add_argument("--data", type=Path,
                        help="directory with corpus.jsonl and questions.jsonl (default: ../shared/data/DATASET)")
    parser.add_argument("--top-k", type=int, default=20,
                        help="chunks requested per search, before deduplication to passages (default: %(default)s)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N questions")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the result rows to PATH as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 5:
        parser.error(f"--top-k must be at least 5 to compute recall@5, got {args.top_k}")
    args.kb = args.kb or args.dataset
    args.data = args.data or SHARED_DATA_DIR / args.dataset
    configure_logging()
    return run_reporting_errors(run, args)


def run(args: argparse.Namespace) -> int:
    questions = list(read_jsonl(args.data / "questions.jsonl"))
    if args.limit is not None:
        questions = questions[: args.limit]
    logger.info("loaded %d questions from %s", len(questions), args.data)

    with connect_and_ingest(args, corpus_documents(args.data / "corpus.jsonl")) as client:
        rows = []
        for retrievers in args.retrievers:
            logger.info("evaluating retrievers %s", ",".join(retrievers))
            rows.append(evaluate(client, args.kb, questions, retrievers, args.top_k))

    metric_names = ["recall@2", "recall@5", "questions", "median_ms"]
    print(format_table(COLUMNS, [[row["retrievers"], *(row[name] for name in metric_names)] for row in rows]))
    if args.json:
        write_json(args.json, {"dataset": args.dataset, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
