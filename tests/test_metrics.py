"""Exact-value tests of evaluation.metrics, with expected values computed by hand."""

import math

import pytest

from evaluation.metrics import (
    dedupe_documents,
    exact_match,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    recall_at_k,
    token_f1,
)


def test_ndcg_binary_gains():
    # Relevant d2 at rank 2 and d4 at rank 4, and d5 is never retrieved.
    # DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    # IDCG over 3 relevant documents = 1 + 1/log2(3) + 1/log2(4) = 2.13093
    ranking = ["d1", "d2", "d3", "d4"]
    qrels = {"d2": 1, "d4": 1, "d5": 1}

    score = ndcg_at_k(ranking, qrels, 4)

    assert score == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3) + 0.5))
    assert score == pytest.approx(0.49819, abs=1e-5)


def test_ndcg_graded_gains():
    # DCG = 1/log2(2) + 0 + 2/log2(4) = 2.0
    # IDCG uses the grades 3, 2, 1: 3 + 2/log2(3) + 1/log2(4) = 4.76186
    ranking = ["a", "b", "c"]
    qrels = {"a": 1, "b": 0, "c": 2, "d": 3}

    score = ndcg_at_k(ranking, qrels, 3)

    assert score == pytest.approx(2.0 / (3 + 2 / math.log2(3) + 0.5))
    assert score == pytest.approx(0.42001, abs=1e-5)


def test_ndcg_cuts_at_k():
    assert ndcg_at_k(["x", "d2"], {"d2": 1}, 1) == 0.0
    assert ndcg_at_k(["x", "d2"], {"d2": 1}, 2) == pytest.approx(1 / math.log2(3))


def test_ndcg_perfect_ranking_is_one():
    assert ndcg_at_k(["a", "b", "x"], {"a": 2, "b": 1}, 10) == pytest.approx(1.0)


def test_ndcg_without_relevant_documents():
    assert ndcg_at_k(["a", "b"], {}, 10) == 0.0
    assert ndcg_at_k(["a", "b"], {"a": 0}, 10) == 0.0


def test_ndcg_counts_repeated_id_once():
    # The second "d2" gains nothing: DCG = 1, IDCG = 1 + 1/log2(3) = 1.63093.
    score = ndcg_at_k(["d2", "d2"], {"d2": 1, "d4": 1}, 2)

    assert score == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert score == pytest.approx(0.61315, abs=1e-5)


def test_recall_at_k():
    ranking = ["a", "b", "c", "d"]
    qrels = {"b": 1, "d": 1, "e": 1}

    assert recall_at_k(ranking, qrels, 1) == 0.0
    assert recall_at_k(ranking, qrels, 2) == pytest.approx(1 / 3)
    assert recall_at_k(ranking, qrels, 4) == pytest.approx(2 / 3)
    assert recall_at_k(ranking, qrels, 100) == pytest.approx(2 / 3)


def test_recall_ignores_zero_grades():
    assert recall_at_k(["b"], {"b": 1, "z": 0}, 5) == 1.0
    assert recall_at_k(["a"], {}, 5) == 0.0


def test_recall_counts_repeated_id_once():
    assert recall_at_k(["b", "b"], {"b": 1, "d": 1}, 2) == 0.5


def test_mrr_at_k():
    ranking = ["a", "b", "c", "d"]
    qrels = {"c": 1, "d": 2}

    assert mrr_at_k(ranking, qrels, 10) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, qrels, 3) == pytest.approx(1 / 3)
    assert mrr_at_k(ranking, qrels, 2) == 0.0
    assert mrr_at_k(["c"], qrels, 1) == 1.0


def test_mrr_skips_zero_grades():
    assert mrr_at_k(["a", "b"], {"a": 0, "b": 1}, 10) == 0.5


@pytest.mark.parametrize("metric", [ndcg_at_k, recall_at_k, mrr_at_k])
def test_metrics_reject_k_below_one(metric):
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric(["a"], {"a": 1}, 0)


def test_normalize_answer():
    assert normalize_answer(" The  quick, brown-fox! ") == "quick brownfox"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("theory") == "theory"


def test_exact_match():
    assert exact_match("The Answer!", "answer") == 1.0
    assert exact_match("answers", "answer") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_partial_overlap():
    # "cat sat on mat" against "cat on mat": precision 3/4, recall 3/3, F1 = 6/7.
    assert token_f1("The cat sat on the mat.", "a cat on a mat") == pytest.approx(6 / 7)


def test_token_f1_counts_token_multiplicity():
    # Common tokens: one "yes" and one "no", so precision and recall are both 2/3.
    assert token_f1("yes yes no", "yes no no") == pytest.approx(2 / 3)


def test_token_f1_edge_cases():
    assert token_f1("Paris", "paris.") == 1.0
    assert token_f1("London", "Paris") == 0.0
    assert token_f1("", "") == 1.0
    assert token_f1("the", "cat") == 0.0
    assert token_f1("cat", "") == 0.0


def test_dedupe_documents_keeps_first_order():
    hits = [
        {"chunk_id": "a#0", "document_id": "a"},
        {"chunk_id": "b#1", "document_id": "b"},
        {"chunk_id": "a#2", "document_id": "a"},
        {"chunk_id": "c#0", "document_id": "c"},
        {"chunk_id": "b#0", "document_id": "b"},
    ]

    assert dedupe_documents(hits) == ["a", "b", "c"]
    assert dedupe_documents([]) == []
