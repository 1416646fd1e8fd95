"""Measure retrieval and answer quality on PubMedQA through the REST API.

Uploads the 1,000 PubMedQA abstracts as one knowledge base and runs the 500 dev
questions through /search for each retriever configuration, scoring recall@1 and
recall@5 of the question's gold document. Chunk hits are deduplicated to documents in
order of first appearance. With --generate N, the first N questions also go through
/query, which scores yes/no/maybe accuracy and whether the gold document is cited.

Example:
    python -m benchmarks.pubmedqa --url http://127.0.0.1:8000 --admin-key "$DOMAINRAG_ADMIN_KEY" --generate 50
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import metrics
from app.client import DomainRagClient
from benchmarks.common import (
    SHARED_DATA_DIR,
    add_retriever_argument,
    add_service_arguments,
    configure_logging,
    connect,
    format_table,
    median_ms,
    read_jsonl,
    run_reporting_errors,
    write_json,
)

logger = logging.getLogger("benchmarks.pubmedqa")

SEARCH_COLUMNS = ["retrievers", "recall@1", "recall@5", "questions", "median ms"]
GENERATION_COLUMNS = ["questions", "accuracy", "unparsed", "citation recall", "median ms"]
_LABEL_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


def parse_label(answer: str) -> str | None:
    """Return the first of the words yes, no or maybe in ``answer``, lowercased, or None."""
    match = _LABEL_WORD.search(answer)
    return match.group(1).lower() if match else None


def corpus_documents(path: Path) -> Iterator[dict[str, Any]]:
    # The corpus has no titles. year is a string such as "2011", or null.
    for record in read_jsonl(path):
        yield {
            "id": record["_id"],
            "text": record["text"],
            "metadata": {"meshes": record.get("meshes", []), "year": record.get("year")},
        }


def evaluate_search(
    client: DomainRagClient, kb: str, questions: list[dict[str, Any]], retrievers: list[str], top_k: int
) -> dict[str, Any]:
    """Run every question through /search with one configuration and return recall@1/@5."""
    recall_1: list[float] = []
    recall_5: list[float] = []
    latencies_s: list[float] = []
    for question in questions:
        started = time.perf_counter()
        response = client.search(kb, question["question"], top_k=top_k, retrievers=retrievers)
        latencies_s.append(time.perf_counter() - started)

        ranking = metrics.dedupe_documents(response["hits"])
        gold = {question["gold_doc"]: 1}
        recall_1.append(metrics.recall_at_k(ranking, gold, 1))
        recall_5.append(metrics.recall_at_k(ranking, gold, 5))

    return {
        "retrievers": ",".join(retrievers),
        "recall@1": statistics.fmean(recall_1),
        "recall@5": statistics.fmean(recall_5),
        "questions": len(questions),
        "median_ms": median_ms(latencies_s),
    }


def evaluate_generation(
    client: DomainRagClient, kb: str, questions: list[dict[str, Any]], top_k: int
) -> dict[str, Any]:
    """Run the questions through /query and return label accuracy and citation recall.

    An answer without the word yes, no or maybe counts as wrong and as unparsed.
    """
    correct = 0
    cited = 0
    predictions: Counter[str] = Counter()
    latencies_s: list[float] = []
    for index, question in enumerate(questions, start=1):
        started = time.perf_counter()
        response = client.query(kb, question["question"], top_k=top_k)
        latencies_s.append(time.perf_counter() - started)

        label = parse_label(response.get("answer") or "")
        predictions[label or "unparsed"] += 1
        if label == question["answer"]:
            correct += 1
        cited_documents = {str(citation["document_id"]) for citation in response.get("citations") or []}
        if question["gold_doc"] in cited_documents:
            cited += 1
        if index % 10 == 0:
            logger.info("generated %d of %d answers", index, len(questions))

    count = len(questions)
    return {
        "questions": count,
        "accuracy": correct / count,
        "unparsed": predictions["unparsed"],
        "citation_recall": cited / count,
        "median_ms": median_ms(latencies_s),
        "predicted_labels": dict(predictions),
        "query_top_k": top_k,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Measure gold-document recall and yes/no/maybe accuracy on PubMedQA "
        "through a running domainrag service."
    )
    add_service_arguments(parser, default_kb="pubmedqa")
    add_retriever_argument(parser)
    parser.add_argument(
        "--data",
        type=Path,
        default=SHARED_DATA_DIR / "pubmedqa",
        help="directory with corpus.jsonl and dev.jsonl (default: %(default)s)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=50,
        help="chunks requested per search, before deduplication to the top 5 documents (default: %(default)s)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N dev questions in the search runs")
    parser.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help="also run the first N dev questions through /query (default: 0, no generation)",
    )
    parser.add_argument(
        "--query-top-k", type=int, default=5, help="top_k sent with each /query request (default: %(default)s)"
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results to PATH as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.top_k < 5:
        parser.error(f"--top-k must be at least 5 to compute recall@5, got {args.top_k}")
    if args.generate < 0:
        parser.error(f"--generate must be 0 or more, got {args.generate}")
    configure_logging()
    return run_reporting_errors(run, args)


def run(args: argparse.Namespace) -> int:
    questions = list(read_jsonl(args.data / "dev.jsonl"))
    search_questions = questions[: args.limit] if args.limit is not None else questions
    generation_questions = questions[: args.generate]
    logger.info("loaded %d dev questions", len(questions))

    with connect(args) as client:
        if not args.skip_ingest:
            started = time.perf_counter()
            jobs = client.upload_documents(
                args.kb, corpus_documents(args.data / "corpus.jsonl"), batch_size=args.batch_size
            )
            failed = sum(int(job.get("failed") or 0) for job in jobs)
            logger.info(
                "ingested the corpus in %.1f s with %d failed documents", time.perf_counter() - started, failed
            )

        search_rows = []
        for retrievers in args.retrievers:
            logger.info("evaluating retrievers %s", ",".join(retrievers))
            search_rows.append(evaluate_search(client, args.kb, search_questions, retrievers, args.top_k))

        generation = None
        if generation_questions:
            logger.info("generating answers for %d questions", len(generation_questions))
            generation = evaluate_generation(client, args.kb, generation_questions, args.query_top_k)

    search_table = [
        [row["retrievers"], row["recall@1"], row["recall@5"], row["questions"], row["median_ms"]]
        for row in search_rows
    ]
    print(format_table(SEARCH_COLUMNS, search_table))

    if generation is not None:
        generation_table = [[
            generation["questions"],
            generation["accuracy"],
            generation["unparsed"],
            generation["citation_recall"],
            generation["median_ms"],
        ]]
        label_counts = sorted(generation["predicted_labels"].items())
        print()
        print(format_table(GENERATION_COLUMNS, generation_table))
        print("predicted labels:", ", ".join(f"{label} {count}" for label, count in label_counts))

    if args.json:
        write_json(args.json, {"dataset": "pubmedqa", "search": search_rows, "generation": generation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
