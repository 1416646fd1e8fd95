"""Retrieval and answer metrics as pure functions.

A ranking is a list of document ids, best first. Qrels map document ids to an integer
relevance grade, and only documents with a grade above 0 count as relevant. When a
ranking repeats a document id, only its first occurrence counts, so that a score can
never exceed the ideal one. Call ``dedupe_documents`` on chunk hits first.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

Qrels = Mapping[str, int]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_LABEL_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)
_PUNCTUATION = set(string.punctuation)


def dedupe_documents(hits: Iterable[Mapping[str, object]]) -> list[str]:
    """Return the ``document_id`` of each hit in order of first appearance."""
    seen: set[str] = set()
    document_ids: list[str] = []
    for hit in hits:
        document_id = str(hit["document_id"])
        if document_id not in seen:
            seen.add(document_id)
            document_ids.append(document_id)
    return document_ids


def _first_occurrences(ranking: Sequence[str], k: int) -> list[tuple[int, str]]:
    """Return (1-based rank, id) for the first occurrence of each id in the top ``k``."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    seen: set[str] = set()
    ranked: list[tuple[int, str]] = []
    for rank, document_id in enumerate(ranking[:k], start=1):
        if document_id not in seen:
            seen.add(document_id)
            ranked.append((rank, document_id))
    return ranked


def ndcg_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    """Compute nDCG@k with linear gains and a log2(rank + 1) discount.

    The gain of a document is its grade in ``qrels`` (binary qrels give gains of 0 and 1),
    as in trec_eval and BEIR. The ideal DCG sorts all qrels grades in descending order and
    takes the top ``k``. Returns 0.0 when no document in ``qrels`` is relevant.
    """
    dcg = 0.0
    for rank, document_id in _first_occurrences(ranking, k):
        gain = qrels.get(document_id, 0)
        if gain > 0:
            dcg += gain / math.log2(rank + 1)

    ideal_gains = sorted((grade for grade in qrels.values() if grade > 0), reverse=True)[:k]
    ideal_dcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal_gains, start=1))
    if ideal_dcg == 0.0:
        return 0.0
    return dcg / ideal_dcg


def recall_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    """Return the share of relevant documents found in the top ``k``.

    The denominator is the number of relevant documents, even when it exceeds ``k``.
    Returns 0.0 when no document in ``qrels`` is relevant.
    """
    relevant = {document_id for document_id, grade in qrels.items() if grade > 0}
    if not relevant:
        return 0.0
    found = sum(1 for _, document_id in _first_occurrences(ranking, k) if document_id in relevant)
    return found / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Qrels, k: int) -> float:
    """Return 1 / rank of the first relevant document in the top ``k``, or 0.0 if none."""
    for rank, document_id in _first_occurrences(ranking, k):
        if qrels.get(document_id, 0) > 0:
            return 1.0 / rank
    return 0.0


def normalize_answer(text: str) -> str:
    """Normalize an answer as the SQuAD evaluation script does.

    Lowercase, remove punctuation, remove the articles a, an and the, and collapse
    whitespace.
    """
    text = text.lower()
    text = "".join(character for character in text if character not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """Return 1.0 if both answers are equal after ``normalize_answer``, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Compute the SQuAD token F1 between two answers after ``normalize_answer``.

    Tokens are counted with multiplicity. When either answer has no tokens, the score is
    1.0 if both have none and 0.0 otherwise, as in the SQuAD 2.0 script.
    """
    prediction_tokens = normalize_answer(prediction).split()
    reference_tokens = normalize_answer(reference).split()
    if not prediction_tokens or not reference_tokens:
        return float(prediction_tokens == reference_tokens)

    common = Counter(prediction_tokens) & Counter(reference_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(prediction_tokens)
    recall = overlap / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


def parse_label(answer: str) -> str | None:
    """Return the first of the words yes, no or maybe in ``answer``, lowercased, or None."""
    match = _LABEL_WORD.search(answer)
    return match.group(1).lower() if match else None
