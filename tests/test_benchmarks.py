"""The multihop, SciFact and PubMedQA benchmarks end to end on three-document datasets, against a live
service on loopback with the fake models. Each uploads its corpus, then reuses it with --skip-ingest."""

import json
import logging
from pathlib import Path

import httpx
import pytest

from benchmarks import multihop, pubmedqa, scifact
from benchmarks.common import write_jsonl
from tests.conftest import ADMIN_KEY, MEDICAL_DOCUMENTS
from tests.live_service import live_service

INGESTED = "ingested the corpus in"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    with live_service(tmp_path_factory.mktemp("benchmarks") / "data", rate_limit_per_second=0) as url:
        yield url


def write_multihop_data(directory: Path) -> Path:
    directory.mkdir()
    write_jsonl(directory / "corpus.jsonl", [{"_id": d["id"], "title": d["title"], "text": d["text"]}
                                             for d in MEDICAL_DOCUMENTS])
    write_jsonl(directory / "questions.jsonl", [
        {"question": "Which drug lowers LDL cholesterol and causes muscle pain?", "gold_docs": ["statins"]},
        {"question": "What controls blood glucose in type 1 diabetes?", "gold_docs": ["insulin"]}])
    return directory


def write_scifact_data(directory: Path) -> Path:
    directory.mkdir()
    write_jsonl(directory / "corpus.jsonl", [{"_id": d["id"], "title": d["title"], "text": d["text"]}
                                             for d in MEDICAL_DOCUMENTS])
    write_jsonl(directory / "queries.jsonl", [{"_id": "q1", "text": "aspirin myocardial infarction"},
                                              {"_id": "q2", "text": "insulin blood glucose"}])
    (directory / "qrels").mkdir()
    (directory / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\taspirin\t1\nq2\tinsulin\t1\n")
    return directory


def write_pubmedqa_data(directory: Path) -> Path:
    directory.mkdir()
    write_jsonl(directory / "corpus.jsonl", [{"_id": d["id"], "text": d["text"], "meshes": ["Drugs"], "year": "2011"}
                                             for d in MEDICAL_DOCUMENTS])
    write_jsonl(directory / "dev.jsonl", [
        {"question": "Does low-dose aspirin reduce myocardial infarction?", "gold_doc": "aspirin", "answer": "yes"},
        {"question": "Do statins lower LDL cholesterol?", "gold_doc": "statins", "answer": "yes"}])
    return directory


# (benchmark module, data builder, options of its own, first column names of its printed table, key of the
# search rows in its JSON output)
BENCHMARKS = [
    (multihop, write_multihop_data, ["--dataset", "2wiki", "--top-k", "5"], "retrievers  recall@2  recall@5", "rows"),
    (scifact, write_scifact_data, ["--top-k", "10"], "retrievers  rerank  nDCG@10", "rows"),
    (pubmedqa, write_pubmedqa_data, ["--top-k", "5"], "retrievers  recall@1  recall@5", "search"),
]


@pytest.mark.parametrize(("benchmark", "build_data", "options", "header", "rows_key"), BENCHMARKS,
                         ids=[module.__name__.rsplit(".", 1)[1] for module, *_ in BENCHMARKS])
def test_benchmark_ingests_then_reuses_corpus(benchmark, build_data, options, header, rows_key, base_url, tmp_path,
                                              capsys, caplog):
    name = benchmark.__name__.rsplit(".", 1)[1]
    data = build_data(tmp_path / "data")
    key_path = tmp_path / "key"
    common = ["--url", base_url, "--kb", name, "--data", str(data), "--retrievers", "bm25", "--json",
              str(tmp_path / "rows.json"), *options]
    caplog.set_level(logging.INFO, logger="benchmarks")

    status = benchmark.main([*common, "--admin-key", ADMIN_KEY, "--tenant", f"bench-{name}",
                             "--save-api-key", str(key_path)])
    assert status == 0
    assert capsys.readouterr().out.startswith(header)
    assert any(record.getMessage().startswith(INGESTED) for record in caplog.records)
    assert json.loads((tmp_path / "rows.json").read_text())[rows_key][0]["retrievers"] == "bm25"
    api_key = key_path.read_text().strip()
    listed = httpx.get(f"{base_url}/v1/knowledge-bases/{name}", headers={"Authorization": f"Bearer {api_key}"})
    assert listed.json()["document_count"] == len(MEDICAL_DOCUMENTS)

    caplog.clear()
    status = benchmark.main([*common, "--api-key", api_key, "--skip-ingest"])
    assert status == 0
    assert capsys.readouterr().out.startswith(header)
    assert not any(record.getMessage().startswith(INGESTED) for record in caplog.records)


@pytest.mark.parametrize("benchmark", [multihop, scifact, pubmedqa])
def test_benchmark_help_exits_cleanly(benchmark, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--help"])
    assert exit_info.value.code == 0
    assert "--skip-ingest" in capsys.readouterr().out
