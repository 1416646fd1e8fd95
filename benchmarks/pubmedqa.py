"""Measure retrieval and answer quality on PubMedQA through the REST API.

Uploads the 1,000 PubMedQA abstracts as one knowledge base and runs the 500 dev
questions through /search for each retriever configuration, scoring recall@1 and
recall@5 of the question's gold document. Chunk hits are deduplicated to documents in
order of first appearance. With --generate N, N questions (from --generate-offset on)
also go through /query, each followed by --instruction, which scores yes/no/maybe
accuracy and whether the gold document is cited. --export-training writes questions in
the training format of `domainrag finetune`, with the same instruction, so that a
fine-tuned backbone is trained on the prompt it is evaluated with.

Examples:
    python -m benchmarks.pubmedqa --url http://127.0.0.1:8000 --admin-key "$DOMAINRAG_ADMIN_KEY" --generate 50
    python -m benchmarks.pubmedqa --export-training train.jsonl --export-limit 250
    python -m benchmarks.pubmedqa --api-key "$KEY" --skip-ingest --skip-search \
        --generate 250 --generate-offset 250 --rerank llm --generator my-adapter
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
    connect_and_ingest,
    format_table,
    median_ms,
    read_jsonl,
    run_reporting_errors,
    write_json,
    write_jsonl,
)

logger = logging.getLogger("benchmarks.pubmedqa")

SEARCH_COLUMNS = ["retrievers", "recall@1", "recall@5", "questions", "median ms"]
GENERATION_COLUMNS = ["questions", "accuracy", "unparsed", "citation recall", "median ms"]
_LABEL_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)
DEFAULT_INSTRUCTION = "Answer yes, no or maybe."


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


def ask(question: dict[str, Any], instruction: str) -> str:
    """Return the query text: the question followed by the instruction that requests a label."""
    return f"{question['question']} {instruction}".strip()


def export_training(path: Path, questions: list[dict[str, Any]], instruction: str) -> None:
    """Write `domainrag finetune` training lines: the asked text, the label and the gold document."""
    lines = [
        {"question": ask(question, instruction), "answer": question["answer"], "gold_docs": [question["gold_doc"]]}
        for question in questions
    ]
    write_jsonl(path, lines)


def evaluate_generation(
    client: DomainRagClient,
    kb: str,
    questions: list[dict[str, Any]],
    top_k: int,
    *,
    instruction: str = DEFAULT_INSTRUCTION,
    **options: Any,
) -> dict[str, Any]:
    """Run the questions through /query and return label accuracy and citation recall.

    An answer without the word yes, no or maybe counts as wrong and as unparsed. ``options``
    are passed on as request fields (``rerank``, ``generator``, ``max_new_tokens``).
    """
    correct = 0
    cited = 0
    predictions: Counter[str] = Counter()
    latencies_s: list[float] = []
    stage_ms: dict[str, list[float]] = {}
    for index, question in enumerate(questions, start=1):
        started = time.perf_counter()
        response = client.query(kb, ask(question, instruction), top_k=top_k, **options)
        latencies_s.append(time.perf_counter() - started)
        for stage, milliseconds in response.get("timings_ms", {}).items():
            stage_ms.setdefault(stage, []).append(milliseconds)

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
        "median_stage_ms": {stage: statistics.median(values) for stage, values in stage_ms.items()},
        "options": {name: value for name, value in options.items() if value is not None},
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
    parser.add_argument("--skip-search", action="store_true", help="run no /search configuration, only /query")
    parser.add_argument(
        "--generate",
        type=int,
        default=0,
        metavar="N",
        help="also run N dev questions through /query (default: 0, no generation)",
    )
    parser.add_argument(
        "--generate-offset",
        type=int,
        default=0,
        metavar="M",
        help="skip the first M dev questions in the /query run (default: %(default)s)",
    )
    parser.add_argument(
        "--instruction",
        default=DEFAULT_INSTRUCTION,
        help="text appended to each question sent to /query (default: %(default)r)",
    )
    parser.add_argument("--rerank", choices=["none", "llm", "cross-encoder"], help="rerank mode for /query")
    parser.add_argument("--generator", help="backbone name for /query, overriding the knowledge base's")
    parser.add_argument("--max-new-tokens", type=int, help="maximum answer length for /query, in generator tokens")
    parser.add_argument(
        "--export-training",
        type=Path,
        metavar="PATH",
        help="write the first --export-limit dev questions as `domainrag finetune` training lines and exit",
    )
    parser.add_argument("--export-limit", type=int, default=250, help="questions to export (default: %(default)s)")
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
    if args.generate < 0 or args.generate_offset < 0:
        parser.error("--generate and --generate-offset must be 0 or more")
    configure_logging()
    return run_reporting_errors(run, args)


def run(args: argparse.Namespace) -> int:
    questions = list(read_jsonl(args.data / "dev.jsonl"))
    search_questions = questions[: args.limit] if args.limit is not None else questions
    generation_questions = questions[args.generate_offset : args.generate_offset + args.generate]
    logger.info("loaded %d dev questions", len(questions))
    if args.export_training:
        export_training(args.export_training, questions[: args.export_limit], args.instruction)
        logger.info("wrote %d training lines to %s", min(args.export_limit, len(questions)), args.export_training)
        return 0

    with connect_and_ingest(args, corpus_documents(args.data / "corpus.jsonl")) as client:
        search_rows = []
        for retrievers in [] if args.skip_search else args.retrievers:
            logger.info("evaluating retrievers %s", ",".join(retrievers))
            search_rows.append(evaluate_search(client, args.kb, search_questions, retrievers, args.top_k))

        generation = None
        if generation_questions:
            logger.info("generating answers for %d questions", len(generation_questions))
            generation = evaluate_generation(
                client,
                args.kb,
                generation_questions,
                args.query_top_k,
                instruction=args.instruction,
                rerank=args.rerank,
                generator=args.generator,
                max_new_tokens=args.max_new_tokens,
            )

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
        stages = sorted(generation["median_stage_ms"].items())
        print("median stage ms:", ", ".join(f"{stage} {milliseconds:.0f}" for stage, milliseconds in stages))

    if args.json:
        write_json(args.json, {"dataset": "pubmedqa", "search": search_rows, "generation": generation})
    return 0


if __name__ == "__main__":
    sys.exit(main())
