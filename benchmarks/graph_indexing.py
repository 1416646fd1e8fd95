"""Time graph indexing against dense embedding of the same chunks, side by side in one process.

Reads the chunk texts of one knowledge base from a service's SQLite catalog. It first times the embedder
over all chunk texts, which is what dense indexing costs at ingestion. It then times building the entity
graph from the same chunks: rule-based extraction into the graph store, embedding the entity names, and
the first full build of the PageRank walk matrix. Prints one table with both times and their ratio.

Example:
    python -m benchmarks.graph_indexing --catalog /tmp/bench-data/catalog.sqlite3 --kb scifact
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import format_table
from retrievers.base import IndexedChunk
from retrievers.embedders import load_embedder
from retrievers.graph.retriever import GraphRetriever


def read_chunks(catalog: Path, kb: str, limit: int | None) -> list[IndexedChunk]:
    connection = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True)
    row = connection.execute("SELECT id FROM knowledge_bases WHERE name = ? OR id = ?", (kb, kb)).fetchone()
    if row is None:
        raise SystemExit(f"error: knowledge base {kb!r} not found in {catalog}")
    query = "SELECT id, text FROM chunks WHERE knowledge_base_id = ? ORDER BY id"
    rows = connection.execute(query + (f" LIMIT {int(limit)}" if limit else ""), (row[0],)).fetchall()
    empty = np.zeros(1, dtype=np.float32)
    return [IndexedChunk(rowid=rowid, text=text, embedding=empty) for rowid, text in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Time graph indexing against dense embedding of the same chunks.")
    parser.add_argument("--catalog", type=Path, required=True, help="a service's catalog.sqlite3")
    parser.add_argument("--kb", required=True, help="knowledge base name or id")
    parser.add_argument("--limit", type=int, help="use only the first N chunks")
    args = parser.parse_args(argv)

    chunks = read_chunks(args.catalog, args.kb, args.limit)
    embedder = load_embedder("minilm")
    embedder.embed(["warm-up"])

    started = time.perf_counter()
    embedder.embed([chunk.text for chunk in chunks])
    dense_s = time.perf_counter() - started

    graph = GraphRetriever(embedder=embedder)
    stages: dict[str, float] = {}
    started = time.perf_counter()
    graph.add(chunks)
    stages["extract and store"] = time.perf_counter() - started
    started = time.perf_counter()
    names = graph.sync_names()
    stages["embed names"] = time.perf_counter() - started
    started = time.perf_counter()
    graph.search("warm-up query", top_k=10)
    stages["first search (walk matrix)"] = time.perf_counter() - started
    graph_s = sum(stages.values())

    rows = [["dense embedding", len(chunks), round(dense_s, 1), 1.0]]
    rows += [[f"graph: {stage}", len(chunks), round(seconds, 1), round(seconds / dense_s, 2)]
             for stage, seconds in stages.items()]
    rows.append(["graph total", len(chunks), round(graph_s, 1), round(graph_s / dense_s, 2)])
    print(format_table(["stage", "chunks", "seconds", "x dense"], rows))
    print(f"{len(graph.store.entity_ids)} entities, {names} names embedded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
