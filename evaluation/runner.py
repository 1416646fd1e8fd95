"""Run an evaluation dataset through the search and query API and average the metrics per configuration.

Chunk hits are deduplicated to documents in order of first appearance before scoring, so a document with
several matching chunks counts once.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter
from typing import Any

from app.client import DomainRagClient
from evaluation import metrics
from evaluation.datasets import QaDataset, RetrievalDataset

logger = logging.getLogger(__name__)


def _median_ms(latencies_s: list[float]) -> float:
    return 1000 * statistics.median(latencies_s) if latencies_s else float("nan")


def evaluate_retrieval(client: DomainRagClient, kb: str, dataset: RetrievalDataset, retrievers: list[str],
                       *, top_k: int, limit: int | None = None, rerank: str = "none") -> dict[str, Any]:
    """Return nDCG@10, recall@10, recall@100 and MRR@10 averaged over the dataset's queries.

    With ``rerank`` other than "none", the row also has the median time the service spent reranking.
    """
    scores: dict[str, list[float]] = {"ndcg@10": [], "recall@10": [], "recall@100": [], "mrr@10": []}
    latencies_s: list[float] = []
    rerank_ms: list[float] = []
    fewest_documents = None
    for query_id, relevant in list(dataset.qrels.items())[:limit]:
        started = time.perf_counter()
        response = client.search(kb, dataset.queries[query_id], top_k=top_k, retrievers=retrievers,
                                 rerank=None if rerank == "none" else rerank)
        latencies_s.append(time.perf_counter() - started)
        if "rerank" in response.get("timings_ms", {}):
            rerank_ms.append(response["timings_ms"]["rerank"])

        ranking = metrics.dedupe_documents(response["hits"])
        fewest_documents = len(ranking) if fewest_documents is None else min(fewest_documents, len(ranking))
        scores["ndcg@10"].append(metrics.ndcg_at_k(ranking, relevant, 10))
        scores["recall@10"].append(metrics.recall_at_k(ranking, relevant, 10))
        scores["recall@100"].append(metrics.recall_at_k(ranking, relevant, 100))
        scores["mrr@10"].append(metrics.mrr_at_k(ranking, relevant, 10))

    row: dict[str, Any] = {"retrievers": ",".join(retrievers)}
    row.update({name: statistics.fmean(values) for name, values in scores.items()})
    # recall@100 counts only the documents inside the top_k chunks, which can be fewer than 100.
    row.update({"queries": len(latencies_s), "median_ms": _median_ms(latencies_s),
                "fewest_documents_returned": fewest_documents, "top_k_chunks": top_k, "rerank": rerank})
    if rerank_ms:
        row["median_rerank_ms"] = statistics.median(rerank_ms)
    return row


def evaluate_qa_retrieval(client: DomainRagClient, kb: str, dataset: QaDataset, retrievers: list[str],
                          *, top_k: int, limit: int | None = None) -> dict[str, Any]:
    """Return recall@1, recall@5 and recall@10 of each question's gold documents."""
    questions = [question for question in dataset.questions[:limit] if question.gold_docs]
    scores: dict[str, list[float]] = {"recall@1": [], "recall@5": [], "recall@10": []}
    latencies_s: list[float] = []
    for question in questions:
        started = time.perf_counter()
        response = client.search(kb, question.question, top_k=top_k, retrievers=retrievers)
        latencies_s.append(time.perf_counter() - started)

        ranking = metrics.dedupe_documents(response["hits"])
        gold = {document_id: 1 for document_id in question.gold_docs}
        for k in (1, 5, 10):
            scores[f"recall@{k}"].append(metrics.recall_at_k(ranking, gold, k))

    row: dict[str, Any] = {"retrievers": ",".join(retrievers)}
    row.update({name: statistics.fmean(values) if values else float("nan") for name, values in scores.items()})
    row.update({"questions": len(questions), "median_ms": _median_ms(latencies_s), "top_k_chunks": top_k})
    return row


def evaluate_qa_answers(client: DomainRagClient, kb: str, dataset: QaDataset, *, count: int,
                        top_k: int) -> dict[str, Any]:
    """Answer the first `count` questions through /query and score the answers and their citations.

    Exact match and token F1 compare the answer with the reference after SQuAD normalisation. When a
    reference is yes, no or maybe, label accuracy compares it with the first of those words in the answer.
    Citation recall is the share of a question's gold documents among the documents its answer cites.
    """
    questions = dataset.questions[:count]
    exact, f1, labels_correct, citation_recall = [], [], [], []
    predicted_labels: Counter[str] = Counter()
    latencies_s: list[float] = []
    for number, question in enumerate(questions, start=1):
        started = time.perf_counter()
        response = client.query(kb, question.question, top_k=top_k)
        latencies_s.append(time.perf_counter() - started)

        answer = response.get("answer") or ""
        exact.append(metrics.exact_match(answer, question.answer))
        f1.append(metrics.token_f1(answer, question.answer))
        reference_label = metrics.parse_label(question.answer)
        if reference_label is not None and metrics.normalize_answer(question.answer) == reference_label:
            label = metrics.parse_label(answer)
            predicted_labels[label or "unparsed"] += 1
            labels_correct.append(float(label == reference_label))
        if question.gold_docs:
            cited = {str(citation["document_id"]) for citation in response.get("citations") or []}
            citation_recall.append(len(cited & set(question.gold_docs)) / len(question.gold_docs))
        if number % 10 == 0:
            logger.info("answered %d of %d questions", number, len(questions))

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    return {"questions": len(questions), "exact_match": mean(exact), "token_f1": mean(f1),
            "label_accuracy": mean(labels_correct), "labelled_questions": len(labels_correct),
            "citation_recall": mean(citation_recall), "median_ms": _median_ms(latencies_s),
            "predicted_labels": dict(predicted_labels), "query_top_k": top_k}
