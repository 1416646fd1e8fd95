"""Measure bulk ingestion throughput in-process, with the real embedder, on an NDJSON corpus.

Runs the service's own ingestion job (parse, normalise, chunk, embed, store, index) on one NDJSON upload
and prints documents per second, chunks per second and the share of the job's time spent outside
`embedder.embed`, which is the pipeline's own overhead.

    python -m benchmarks.ingest_throughput [--corpus PATH] [--limit N]
"""

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from app.jobs import store_raw
from app.main import build_services
from app.settings import Settings
from benchmarks.common import SHARED_DATA_DIR

DEFAULT_CORPUS = SHARED_DATA_DIR / "scifact" / "corpus.jsonl"


class TimedEmbedder:
    """An embedder wrapper that adds up the wall-clock seconds spent in `embed`."""

    def __init__(self, embedder) -> None:
        self._embedder = embedder
        self.seconds = 0.0
        self.texts = 0
        # The document texts of each call, so that the embedder alone can be timed on exactly the same input.
        self.batches: list[list[str]] = []
        self.name, self.dimension, self.max_tokens = embedder.name, embedder.dimension, embedder.max_tokens

    def embed(self, texts, *, is_query: bool = False):
        started = time.perf_counter()
        try:
            return self._embedder.embed(texts, is_query=is_query)
        finally:
            self.seconds += time.perf_counter() - started
            self.texts += len(texts)
            if not is_query:
                self.batches.append(list(texts))

    def token_offsets(self, text: str):
        return self._embedder.token_offsets(text)


def run(corpus: Path, limit: int | None, data_dir: Path, *, embedder=None) -> tuple[dict, TimedEmbedder]:
    """Ingest the corpus with `embedder` (the settings' one when None); return the figures and the timed embedder."""
    body = corpus.read_bytes()
    if limit is not None:
        body = b"\n".join(body.splitlines()[:limit]) + b"\n"

    settings = Settings(data_dir=data_dir, generator="extractive")
    services = build_services(settings, embedder=embedder)
    embedder = TimedEmbedder(services.embedder)
    services.embedder = embedder
    tenant, _ = services.catalog.create_tenant(name="bench")
    knowledge_base = services.catalog.create_knowledge_base(tenant_id=tenant.id, name="scifact",
                                                            chunk_size=settings.chunk_size,
                                                            chunk_overlap=settings.chunk_overlap)
    raw = store_raw(settings.data_dir, knowledge_base.id, body)
    job = services.catalog.create_job(tenant_id=tenant.id, knowledge_base_id=knowledge_base.id,
                                      items=[{"source": corpus.name, "raw": raw, "kind": "ndjson"}])

    started = time.perf_counter()
    services.jobs.start()
    services.jobs.submit(job.id)
    # Poll often so that the measured time ends within 0.1 s of the job; print progress every 10 s.
    next_report = started + 10
    while True:
        time.sleep(0.1)
        current = services.catalog.get_job(job.id)
        finished = current.status not in ("queued", "running")
        if finished:
            seconds = time.perf_counter() - started
        if finished or time.perf_counter() >= next_report:
            next_report += 10
            print(f"  {time.perf_counter() - started:6.1f} s  {current.status:<10} processed {current.processed} "
                  f"failed {current.failed}  {current.documents_per_second:.1f} documents/s", flush=True)
        if finished:
            break
    services.jobs.stop()

    final = services.catalog.get_job(job.id)
    documents, chunks = services.catalog.count_documents(knowledge_base.id)
    return {"documents": documents, "chunks": chunks, "failed": final.failed, "status": final.status,
            "seconds": round(seconds, 1), "documents_per_second": round(documents / seconds, 2),
            "chunks_per_second": round(chunks / seconds, 2), "embed_seconds": round(embedder.seconds, 1),
            "share_outside_embedder": round(1 - embedder.seconds / seconds, 4),
            "job_documents_per_second": final.documents_per_second}, embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="NDJSON corpus to ingest")
    parser.add_argument("--limit", type=int, help="ingest only the first N lines")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="domainrag-bench-") as data_dir:
        result, _ = run(args.corpus, args.limit, Path(data_dir))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
