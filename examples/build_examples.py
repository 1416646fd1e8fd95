"""Build the sample corpus in examples/ from the PubMedQA data.

Writes examples/pubmed_abstracts.ndjson (200 abstracts) and examples/questions.json
(the first 3 dev questions). The abstracts are the first 200 lines of corpus.jsonl.
When the gold document of one of the 3 questions is not among them, it replaces the
last abstract of the selection that is not a gold document, so the output keeps
corpus order and stays 200 lines long.

Usage: python examples/build_examples.py [PUBMEDQA_DIR]
PUBMEDQA_DIR defaults to ../shared/data/pubmedqa relative to the repository root.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data" / "pubmedqa"
OUTPUT_DIR = Path(__file__).resolve().parent
DOCUMENT_COUNT = 200
QUESTION_COUNT = 3


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]


def select_documents(corpus: list[dict], gold_ids: list[str], count: int) -> list[dict]:
    """Return the first ``count`` corpus records, with every gold id swapped in.

    A missing gold record replaces the last selected record that is not gold. The
    result is sorted back into corpus order. Raises ValueError when a gold id is not
    in the corpus or there are more gold ids than ``count``.
    """
    position_by_id = {record["_id"]: index for index, record in enumerate(corpus)}
    missing = [gold_id for gold_id in gold_ids if gold_id not in position_by_id]
    if missing:
        raise ValueError(f"gold documents not found in the corpus: {missing}")
    if len(set(gold_ids)) > count:
        raise ValueError(f"{len(set(gold_ids))} gold documents do not fit in {count} documents")

    selected = list(range(min(count, len(corpus))))
    gold_positions = {position_by_id[gold_id] for gold_id in gold_ids}
    for position in sorted(gold_positions):
        if position in selected:
            continue
        # Walk back from the end to find a record that no question needs.
        for slot in range(len(selected) - 1, -1, -1):
            if selected[slot] not in gold_positions:
                selected[slot] = position
                break

    return [corpus[position] for position in sorted(selected)]


def to_document(record: dict) -> dict:
    """Convert a PubMedQA corpus record to the service's NDJSON document format.

    The source has no titles, so the document has none. ``year`` is copied as the
    source stores it: a string such as "2011", or null where the source has none.
    """
    return {
        "id": record["_id"],
        "text": record["text"],
        "metadata": {"meshes": record.get("meshes", []), "year": record.get("year")},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "data_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="directory with corpus.jsonl and dev.jsonl (default: %(default)s)",
    )
    args = parser.parse_args(argv)

    corpus = read_jsonl(args.data_dir / "corpus.jsonl")
    questions = read_jsonl(args.data_dir / "dev.jsonl")[:QUESTION_COUNT]
    gold_ids = [question["gold_doc"] for question in questions]

    documents = select_documents(corpus, gold_ids, DOCUMENT_COUNT)
    with (OUTPUT_DIR / "pubmed_abstracts.ndjson").open("w", encoding="utf-8") as file:
        for record in documents:
            file.write(json.dumps(to_document(record), ensure_ascii=False) + "\n")

    question_list = [
        {"question": question["question"], "gold_doc": question["gold_doc"]} for question in questions
    ]
    with (OUTPUT_DIR / "questions.json").open("w", encoding="utf-8") as file:
        json.dump(question_list, file, indent=2, ensure_ascii=False)
        file.write("\n")

    print(f"wrote {len(documents)} documents and {len(question_list)} questions to {OUTPUT_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
