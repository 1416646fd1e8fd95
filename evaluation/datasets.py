"""Readers for evaluation datasets: BEIR retrieval sets and question-answering sets over a corpus."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Qrels = dict[str, dict[str, int]]


class DatasetError(ValueError):
    """A dataset file that is missing or malformed; the message names the file and the line."""


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    if not path.exists():
        raise DatasetError(f"dataset file {path} not found")
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{line_number}: invalid JSON: {error}") from error


def read_qrels(path: Path) -> Qrels:
    """Read a BEIR qrels TSV: query-id, corpus-id, score, with an optional header line."""
    if not path.exists():
        raise DatasetError(f"qrels file {path} not found")
    qrels: Qrels = {}
    with path.open(encoding="utf-8", newline="") as file:
        for line_number, row in enumerate(csv.reader(file, delimiter="\t"), start=1):
            if not row or (line_number == 1 and row[0] == "query-id"):
                continue
            if len(row) != 3:
                raise DatasetError(f"{path}:{line_number}: expected 3 tab-separated fields, got {row!r}")
            query_id, document_id, score = row
            qrels.setdefault(query_id, {})[document_id] = int(score)
    return qrels


def corpus_documents(path: Path) -> Iterator[dict[str, Any]]:
    """Turn BEIR-style corpus lines ({"_id", "title", "text", ...}) into upload documents.

    Fields other than the id, title and text go into the document's metadata.
    """
    for line_number, record in enumerate(read_jsonl(path), start=1):
        if "_id" not in record or "text" not in record:
            raise DatasetError(f"{path}:{line_number}: a corpus line needs \"_id\" and \"text\"")
        metadata = {key: value for key, value in record.items() if key not in ("_id", "title", "text")}
        document = {"id": str(record["_id"]), "text": record["text"], "metadata": metadata}
        if record.get("title"):
            document["title"] = record["title"]
        yield document


@dataclass
class RetrievalDataset:
    """A BEIR dataset: the corpus file, the queries that have qrels in the split, and the qrels."""

    name: str
    corpus_path: Path
    queries: dict[str, str]
    qrels: Qrels

    @classmethod
    def load(cls, directory: Path, split: str) -> RetrievalDataset:
        queries = {str(record["_id"]): record["text"] for record in read_jsonl(directory / "queries.jsonl")}
        qrels = read_qrels(directory / "qrels" / f"{split}.tsv")
        missing = [query_id for query_id in qrels if query_id not in queries]
        if missing:
            raise DatasetError(f"{len(missing)} query ids of qrels/{split}.tsv are missing from queries.jsonl, "
                               f"for example {missing[:5]}")
        return cls(name=directory.name, corpus_path=directory / "corpus.jsonl",
                   queries={query_id: queries[query_id] for query_id in qrels}, qrels=qrels)


@dataclass
class Question:
    id: str
    question: str
    answer: str
    gold_docs: list[str]


@dataclass
class QaDataset:
    """A corpus and questions with a reference answer and, optionally, the documents that support it."""

    name: str
    corpus_path: Path
    questions: list[Question]

    @classmethod
    def load(cls, directory: Path, questions_file: str) -> QaDataset:
        path = directory / questions_file
        questions = []
        for line_number, record in enumerate(read_jsonl(path), start=1):
            if not record.get("question") or "answer" not in record:
                raise DatasetError(f"{path}:{line_number}: a question line needs \"question\" and \"answer\"")
            # PubMedQA names one supporting document "gold_doc"; multi-hop sets list several in "gold_docs".
            gold = record.get("gold_docs") or ([record["gold_doc"]] if record.get("gold_doc") else [])
            questions.append(Question(id=str(record.get("_id", line_number)), question=record["question"],
                                      answer=str(record["answer"]), gold_docs=[str(doc) for doc in gold]))
        return cls(name=directory.name, corpus_path=directory / "corpus.jsonl", questions=questions)
