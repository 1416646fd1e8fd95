import json
from pathlib import Path

import pytest

from app.cli import main as cli_main
from app.client import DomainRagClient
from evaluation.datasets import DatasetError, QaDataset, RetrievalDataset, corpus_documents
from evaluation.metrics import parse_label
from evaluation.runner import evaluate_qa_answers, evaluate_qa_retrieval, evaluate_retrieval
from tests.conftest import ADMIN_KEY, MEDICAL_DOCUMENTS
from tests.live_service import live_service


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.fixture
def beir_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "medical"
    (directory / "qrels").mkdir(parents=True)
    write_jsonl(directory / "corpus.jsonl",
                [{"_id": d["id"], "title": d["title"], "text": d["text"], "year": 2020} for d in MEDICAL_DOCUMENTS])
    write_jsonl(directory / "queries.jsonl", [{"_id": "q1", "text": "aspirin myocardial infarction"},
                                              {"_id": "q2", "text": "insulin glucose diabetes"},
                                              {"_id": "q3", "text": "a query without qrels"}])
    (directory / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\taspirin\t1\nq2\tinsulin\t1\n")
    write_jsonl(directory / "questions.jsonl", [
        {"_id": "a", "question": "Does aspirin reduce myocardial infarction?", "answer": "yes",
         "gold_doc": "aspirin"},
        {"_id": "b", "question": "What do statins lower?", "answer": "LDL cholesterol",
         "gold_docs": ["statins"]},
    ])
    return directory


@pytest.fixture
def tenant_client(client, tenant) -> DomainRagClient:
    api = DomainRagClient("http://testserver", api_key=tenant["Authorization"].removeprefix("Bearer "),
                          http_client=client)
    api.create_or_get_knowledge_base("medical")
    return api


class TestDatasets:
    def test_beir_keeps_queries_with_qrels(self, beir_dir):
        dataset = RetrievalDataset.load(beir_dir, "test")
        assert dataset.queries == {"q1": "aspirin myocardial infarction", "q2": "insulin glucose diabetes"}
        assert dataset.qrels == {"q1": {"aspirin": 1}, "q2": {"insulin": 1}}

    def test_corpus_extra_fields_become_metadata(self, beir_dir):
        first = next(corpus_documents(beir_dir / "corpus.jsonl"))
        assert first == {"id": "aspirin", "title": MEDICAL_DOCUMENTS[0]["title"],
                         "text": MEDICAL_DOCUMENTS[0]["text"], "metadata": {"year": 2020}}

    def test_qa_reads_gold_doc_and_gold_docs(self, beir_dir):
        questions = QaDataset.load(beir_dir, "questions.jsonl").questions
        assert [question.gold_docs for question in questions] == [["aspirin"], ["statins"]]

    def test_missing_split_is_reported(self, beir_dir):
        with pytest.raises(DatasetError, match=r"qrels file .*qrels/dev.tsv not found"):
            RetrievalDataset.load(beir_dir, "dev")

    def test_qrels_query_missing_from_queries(self, beir_dir):
        (beir_dir / "qrels" / "test.tsv").write_text("q9\taspirin\t1\n")
        with pytest.raises(DatasetError, match=r"1 query ids of qrels/test.tsv are missing from queries.jsonl"):
            RetrievalDataset.load(beir_dir, "test")


class TestRunner:
    def test_retrieval_metrics_per_configuration(self, tenant_client, beir_dir):
        tenant_client.upload_documents("medical", corpus_documents(beir_dir / "corpus.jsonl"))
        dataset = RetrievalDataset.load(beir_dir, "test")
        for retrievers in (["bm25"], ["dense"], ["bm25", "dense"]):
            row = evaluate_retrieval(tenant_client, "medical", dataset, retrievers, top_k=10)
            assert row["retrievers"] == ",".join(retrievers)
            assert row["ndcg@10"] == pytest.approx(1.0)
            assert row["recall@10"] == pytest.approx(1.0)
            assert row["mrr@10"] == pytest.approx(1.0)
            assert row["queries"] == 2

    def test_qa_retrieval_and_answers(self, tenant_client, beir_dir):
        tenant_client.upload_documents("medical", corpus_documents(beir_dir / "corpus.jsonl"))
        dataset = QaDataset.load(beir_dir, "questions.jsonl")
        row = evaluate_qa_retrieval(tenant_client, "medical", dataset, ["bm25"], top_k=10)
        assert row["recall@1"] == pytest.approx(1.0)
        assert row["questions"] == 2

        # The fake generator answers with the first sentence of passage [1] and cites it.
        answers = evaluate_qa_answers(tenant_client, "medical", dataset, count=2, top_k=3)
        assert answers["questions"] == 2
        assert answers["citation_recall"] == pytest.approx(1.0)
        assert answers["labelled_questions"] == 1
        assert answers["label_accuracy"] == 0.0
        assert answers["predicted_labels"] == {"unparsed": 1}
        assert answers["exact_match"] == 0.0
        assert 0.0 < answers["token_f1"] < 1.0


class TestParseLabel:
    @pytest.mark.parametrize(("answer", "label"), [("Yes, it does.", "yes"), ("Maybe; no data", "maybe"),
                                                   ("Nothing here", None), ("knowledge", None)])
    def test_first_label_word(self, answer, label):
        assert parse_label(answer) == label


class TestEvalCommand:
    def test_json_and_chart_against_running_service(self, tmp_path, beir_dir, capsys):
        chart = tmp_path / "chart.png"
        with live_service(tmp_path / "data") as url:
            status = cli_main(["eval", "beir", str(beir_dir), "--url", url, "--admin-key", ADMIN_KEY,
                               "--retrievers", "bm25", "bm25,dense", "--json", "--chart", str(chart)])
        assert status == 0
        result = json.loads(capsys.readouterr().out)
        assert [row["retrievers"] for row in result["retrieval"]] == ["bm25", "bm25,dense"]
        assert result["retrieval"][0]["ndcg@10"] == pytest.approx(1.0)
        assert result["dataset"] == "medical"
        assert chart.read_bytes().startswith(b"\x89PNG")

    def test_table_for_qa_dataset(self, tmp_path, beir_dir, capsys):
        with live_service(tmp_path / "data") as url:
            status = cli_main(["eval", "qa", str(beir_dir), "--url", url, "--admin-key", ADMIN_KEY,
                               "--retrievers", "bm25"])
        assert status == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].split() == ["retrievers", "recall@1", "recall@5", "recall@10", "questions", "median", "ms"]
        assert lines[2].split()[:2] == ["bm25", "1.0000"]

    def test_missing_dataset_exits_with_message(self, tmp_path, capsys):
        assert cli_main(["eval", "beir", str(tmp_path / "nowhere"), "--url", "http://127.0.0.1:9"]) == 2
        assert "not found" in capsys.readouterr().err
