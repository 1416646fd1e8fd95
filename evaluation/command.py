"""`domainrag eval`: run a retrieval or question-answering dataset through the real pipeline.

The pipeline is either a running service (--url) or one built in this process on a fresh data directory,
which makes a run reproducible from nothing but the dataset files.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.client import DomainRagClient
from evaluation.datasets import DatasetError, QaDataset, RetrievalDataset, corpus_documents
from evaluation.report import bar_chart, format_table
from evaluation.runner import evaluate_qa_answers, evaluate_qa_retrieval, evaluate_retrieval

logger = logging.getLogger("evaluation")

RETRIEVAL_METRICS = ["ndcg@10", "recall@10", "recall@100", "mrr@10"]
QA_RETRIEVAL_METRICS = ["recall@1", "recall@5", "recall@10"]
ANSWER_METRICS = ["exact_match", "token_f1", "label_accuracy", "citation_recall"]
DEFAULT_CONFIGURATIONS = "bm25 dense bm25,dense"


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=["beir", "qa"],
                        help="beir: corpus.jsonl, queries.jsonl and qrels/SPLIT.tsv; qa: corpus.jsonl and a "
                        "questions file with \"question\", \"answer\" and optional \"gold_docs\" or \"gold_doc\"")
    parser.add_argument("dataset", type=Path, help="dataset directory")
    parser.add_argument("--split", default="test", help="beir: qrels split to score (default: %(default)s)")
    parser.add_argument("--questions", default="questions.jsonl",
                        help="qa: questions file inside the dataset directory (default: %(default)s)")
    parser.add_argument("--retrievers", nargs="+", default=DEFAULT_CONFIGURATIONS.split(), metavar="CONFIG",
                        help="retriever configurations, one row each; join names with commas to fuse them "
                        f"(default: {DEFAULT_CONFIGURATIONS})")
    parser.add_argument("--top-k", type=int,
                        help="chunks requested per search before deduplication to documents "
                        "(default: 100 for beir, 50 for qa)")

    parser.add_argument("--limit", type=int, help="score only the first N queries or questions")
    parser.add_argument("--generate", type=int, default=0, metavar="N",
                        help="qa: also answer the first N questions through /query and score exact match, token "
                        "F1, yes/no/maybe accuracy and citation recall (default: 0, retrieval only)")
    parser.add_argument("--query-top-k", type=int, default=5,
                        help="qa: top_k of each /query request, the passages an answer may cite (default: 5)")

    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")
    parser.add_argument("--chart", type=Path, metavar="PNG", help="write a bar chart of the comparison to this file")
    service = parser.add_argument_group("service (default: an in-process service on a fresh data directory)")
    service.add_argument("--url", default=os.environ.get("DOMAINRAG_URL"),
                         help="evaluate a running service instead (env DOMAINRAG_URL)")
    service.add_argument("--api-key", default=os.environ.get("DOMAINRAG_API_KEY"),
                         help="tenant API key for --url (env DOMAINRAG_API_KEY)")
    service.add_argument("--admin-key", default=os.environ.get("DOMAINRAG_ADMIN_KEY"),
                         help="with --url and no --api-key, create a tenant with this admin key")
    service.add_argument("--kb", help="knowledge base name (default: eval-<dataset directory name>)")
    service.add_argument("--skip-ingest", action="store_true",
                         help="search the existing knowledge base without uploading the corpus")
    service.add_argument("--data-dir", type=Path,
                         help="in-process: data directory to use and keep (default: a temporary one, removed)")
    service.add_argument("--generator", help="in-process: generator backbone for --generate (default: the "
                         "service's default; 'extractive' when nothing is generated)")


def run_eval(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logger.setLevel(logging.INFO)
    try:
        configurations = [_configuration(value) for value in args.retrievers]
        dataset = (RetrievalDataset.load(args.dataset, args.split) if args.kind == "beir"
                   else QaDataset.load(args.dataset, args.questions))
    except (DatasetError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    top_k = args.top_k or (100 if args.kind == "beir" else 50)
    kb = args.kb or f"eval-{dataset.name}"

    with _client(args) as client:
        if args.skip_ingest:
            client.get_knowledge_base(kb)
        else:
            client.create_or_get_knowledge_base(kb)
            started = time.perf_counter()
            jobs = client.upload_documents(kb, corpus_documents(dataset.corpus_path))
            logger.info("ingested %s in %.1f s, %d documents failed", dataset.corpus_path,
                        time.perf_counter() - started, sum(int(job.get("failed") or 0) for job in jobs))
        result = _evaluate(client, kb, dataset, configurations, args, top_k)

    result.update({"dataset": dataset.name, "kind": args.kind, "top_k_chunks": top_k})
    if args.kind == "beir":
        result["split"] = args.split
    if args.json:
        print(json.dumps(_nan_to_none(result), indent=2, allow_nan=False))
    else:
        _print_tables(result)
    if args.chart:
        metric_names = RETRIEVAL_METRICS if args.kind == "beir" else QA_RETRIEVAL_METRICS
        bar_chart(result["retrieval"], metric_names, args.chart, title=f"{dataset.name}: retrieval by configuration")
        logger.info("wrote %s", args.chart)
    return 0


def _configuration(value: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise ValueError(f"invalid retriever configuration {value!r}: expected names such as bm25 or bm25,dense")
    return names


def _evaluate(client: DomainRagClient, kb: str, dataset: RetrievalDataset | QaDataset,
              configurations: list[list[str]], args: argparse.Namespace, top_k: int) -> dict[str, Any]:
    rows = []
    for retrievers in configurations:
        logger.info("evaluating retrievers %s", ",".join(retrievers))
        if isinstance(dataset, RetrievalDataset):
            rows.append(evaluate_retrieval(client, kb, dataset, retrievers, top_k=top_k, limit=args.limit))
        else:
            rows.append(evaluate_qa_retrieval(client, kb, dataset, retrievers, top_k=top_k, limit=args.limit))
    result: dict[str, Any] = {"retrieval": rows}
    if isinstance(dataset, QaDataset) and args.generate > 0:
        logger.info("answering %d questions", args.generate)
        result["answers"] = evaluate_qa_answers(client, kb, dataset, count=args.generate, top_k=args.query_top_k)
    return result


def _print_tables(result: dict[str, Any]) -> None:
    metric_names = RETRIEVAL_METRICS if result["kind"] == "beir" else QA_RETRIEVAL_METRICS
    count_name = "queries" if result["kind"] == "beir" else "questions"
    print(format_table(["retrievers", *metric_names, count_name, "median ms"],
                       [[row["retrievers"], *(row[name] for name in metric_names), row[count_name], row["median_ms"]]
                        for row in result["retrieval"]]))
    answers = result.get("answers")
    if answers:
        print()
        print(format_table(["questions", *ANSWER_METRICS, "median ms"],
                           [[answers["questions"], *(answers[name] for name in ANSWER_METRICS),
                             answers["median_ms"]]]))


def _nan_to_none(value: Any) -> Any:
    """Replace NaN (a metric with no questions to average) by None, which JSON can represent."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(item) for item in value]
    return value


@contextlib.contextmanager
def _client(args: argparse.Namespace) -> Iterator[DomainRagClient]:
    if args.url:
        with DomainRagClient(args.url, api_key=args.api_key, admin_key=args.admin_key, timeout_s=600) as client:
            if not client.api_key:
                if not args.admin_key:
                    raise SystemExit("error: with --url, set --api-key, or --admin-key to create a tenant")
                client.api_key = client.create_tenant(f"eval-{secrets.token_hex(4)}")["api_key"]
            yield client
        return
    with _in_process_client(args) as client:
        yield client


@contextlib.contextmanager
def _in_process_client(args: argparse.Namespace) -> Iterator[DomainRagClient]:
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="domainrag-eval-")))
        admin_key = secrets.token_urlsafe(24)
        overrides: dict[str, Any] = {"data_dir": data_dir, "admin_key": admin_key, "rate_limit_per_second": 0}
        generator = args.generator or (None if args.generate else "extractive")
        if generator:
            overrides["generator"] = generator
        http = stack.enter_context(TestClient(create_app(Settings(**overrides))))
        client = DomainRagClient("http://testserver", admin_key=admin_key, http_client=http)
        client.api_key = client.create_tenant(f"eval-{secrets.token_hex(4)}")["api_key"]
        logger.info("in-process service on %s", data_dir)
        yield client
