"""Command-line plumbing and the synthetic corpus shared by the benchmark scripts."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.client import ApiError, DomainRagClient, JobFailedError, JobTimeoutError

logger = logging.getLogger("benchmarks")

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
DEFAULT_URL = "http://127.0.0.1:8000"
_WORD = re.compile(r"\w+")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.strip():
                yield json.loads(line)


def add_service_arguments(parser: argparse.ArgumentParser, default_kb: str) -> None:
    """Add the options that select the service, the tenant and the knowledge base."""
    group = parser.add_argument_group("service")
    group.add_argument("--url", default=DEFAULT_URL, help="service base URL (default: %(default)s)")
    group.add_argument(
        "--admin-key",
        default=os.environ.get("DOMAINRAG_ADMIN_KEY"),
        help="admin key used to create a new tenant for this run "
        "(default: $DOMAINRAG_ADMIN_KEY); ignored when --api-key is set",
    )
    group.add_argument(
        "--api-key",
        default=os.environ.get("DOMAINRAG_API_KEY"),
        help="API key of an existing tenant (default: $DOMAINRAG_API_KEY)",
    )
    group.add_argument(
        "--kb", default=default_kb, help="knowledge base name, created if missing (default: %(default)s)"
    )
    group.add_argument(
        "--tenant",
        help="name of the tenant created with --admin-key (default: bench-<kb>-<timestamp>)",
    )
    group.add_argument(
        "--save-api-key",
        type=Path,
        metavar="PATH",
        help="write the API key of the tenant created with --admin-key to PATH (mode 0600), "
        "to reuse it later with --api-key",
    )
    group.add_argument(
        "--skip-ingest",
        action="store_true",
        help="query the existing knowledge base without uploading the corpus (requires --api-key)",
    )
    group.add_argument(
        "--batch-size", type=int, default=1000, help="documents per upload request (default: %(default)s)"
    )
    group.add_argument(
        "--timeout", type=float, default=300.0, help="HTTP timeout per request in seconds (default: %(default)s)"
    )


def parse_retriever_config(value: str) -> list[str]:
    """Split a comma-separated retriever configuration such as "bm25,dense"."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"invalid retriever configuration {value!r}: no retriever names")
    return names


def add_retriever_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retrievers",
        nargs="+",
        type=parse_retriever_config,
        default=[["bm25"], ["dense"], ["bm25", "dense"]],
        metavar="CONFIG",
        help="retriever configurations to evaluate, one table row each. Join retrievers "
        "with commas to fuse them (default: bm25 dense bm25,dense)",
    )


def connect(args: argparse.Namespace) -> DomainRagClient:
    """Return a client authenticated as a tenant and make sure ``args.kb`` exists.

    With --api-key the client reuses that tenant. Otherwise it creates a new tenant with
    --admin-key. With --skip-ingest the knowledge base must already exist.
    """
    if args.skip_ingest and not args.api_key:
        raise SystemExit("error: --skip-ingest needs --api-key of the tenant that owns the knowledge base")

    client = DomainRagClient(args.url, api_key=args.api_key, admin_key=args.admin_key, timeout_s=args.timeout)
    if not args.api_key:
        if not args.admin_key:
            raise SystemExit("error: set --api-key, or --admin-key to create a tenant (or $DOMAINRAG_ADMIN_KEY)")
        tenant_name = args.tenant or f"bench-{args.kb}-{time.strftime('%Y%m%d-%H%M%S')}"
        tenant = client.create_tenant(tenant_name)
        client.api_key = tenant["api_key"]
        logger.info("created tenant %s (id %s)", tenant.get("name"), tenant.get("id"))
        if args.save_api_key:
            write_secret(args.save_api_key, tenant["api_key"] + "\n")
            logger.info("wrote the tenant API key to %s", args.save_api_key)

    if args.skip_ingest:
        kb = client.get_knowledge_base(args.kb)
    else:
        kb = client.create_or_get_knowledge_base(args.kb)
    logger.info("using knowledge base %s (id %s)", args.kb, kb.get("id"))
    return client


def connect_and_ingest(args: argparse.Namespace, documents: Iterable[dict[str, Any]]) -> DomainRagClient:
    """Connect as ``connect(args)`` does, upload ``documents`` into ``args.kb`` and return the client.

    With --skip-ingest nothing is uploaded and ``documents`` is not read. The upload goes in batches of
    --batch-size and logs its duration and the number of failed documents.
    """
    client = connect(args)
    if args.skip_ingest:
        return client
    try:
        started = time.perf_counter()
        jobs = client.upload_documents(args.kb, documents, batch_size=args.batch_size)
        failed = sum(int(job.get("failed") or 0) for job in jobs)
        logger.info("ingested the corpus in %.1f s with %d failed documents", time.perf_counter() - started, failed)
    except BaseException:
        client.close()
        raise
    return client


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable only by the owner, replacing any content."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(text)


def median_ms(latencies_s: Sequence[float]) -> float:
    return statistics.median(latencies_s) * 1000.0 if latencies_s else float("nan")


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Format rows as a plain-text table. Floats get 4 decimals, or 1 for "ms" columns."""
    formatted_rows = []
    for row in rows:
        cells = []
        for column, value in zip(columns, row, strict=True):
            if isinstance(value, float):
                cells.append(f"{value:.1f}" if "ms" in column else f"{value:.4f}")
            else:
                cells.append(str(value))
        formatted_rows.append(cells)

    widths = [len(column) for column in columns]
    for cells in formatted_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, cells)]

    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines.append("  ".join("-" * width for width in widths))
    for cells in formatted_rows:
        # Left-align the first column (the configuration name) and right-align numbers.
        first, *rest = cells
        line = [first.ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(rest, widths[1:])]
        lines.append("  ".join(line))
    return "\n".join(lines)


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")
    logger.info("wrote %s", path)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", path)


def run_reporting_errors(run: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Call ``run(args)`` and turn service and connection errors into one log line and exit status 1."""
    try:
        return run(args)
    except (ApiError, JobFailedError, JobTimeoutError) as error:
        logger.error("%s", error)
    except httpx.RequestError as error:
        logger.error("request to %s failed: %s: %s", error.request.url, type(error).__name__, error)
    return 1


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # httpx logs every request at INFO, which would bury the progress lines.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class SyntheticCorpus:
    """Chunks of words drawn by SciFact's word frequencies, with vectors near real MiniLM chunk embeddings."""

    def __init__(self, corpus_path: Path, base_vectors: np.ndarray, *, seed: int = 0,
                 words_per_chunk: tuple[int, int] = (60, 150), noise: float = 0.6) -> None:
        counts: Counter[str] = Counter()
        for record in read_jsonl(corpus_path):
            counts.update(_WORD.findall(f"{record.get('title', '')} {record['text']}".lower()))
        self.words = np.array(list(counts))
        self.probabilities = np.array(list(counts.values()), dtype=np.float64)
        self.probabilities /= self.probabilities.sum()
        self.base_vectors = base_vectors
        self.words_per_chunk = words_per_chunk
        self.noise = noise
        self._rng = np.random.default_rng(seed)

    def texts(self, count: int) -> list[str]:
        low, high = self.words_per_chunk
        lengths = self._rng.integers(low, high + 1, size=count)
        drawn = self._rng.choice(len(self.words), size=int(lengths.sum()), p=self.probabilities)
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [" ".join(self.words[drawn[start:end]]) for start, end in zip(bounds[:-1], bounds[1:])]

    def vectors(self, count: int) -> np.ndarray:
        """Return unit vectors: a real embedding, plus a random share of another, plus Gaussian noise."""
        bases = len(self.base_vectors)
        first = self.base_vectors[self._rng.integers(0, bases, size=count)]
        second = self.base_vectors[self._rng.integers(0, bases, size=count)]
        mix = self._rng.uniform(0.0, 0.6, size=(count, 1)).astype(np.float32)
        dimension = self.base_vectors.shape[1]
        noise = self._rng.normal(0.0, self.noise / np.sqrt(dimension), size=(count, dimension)).astype(np.float32)
        vectors = first + mix * second + noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors
