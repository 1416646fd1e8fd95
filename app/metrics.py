"""Prometheus metrics: requests by route template and status, latency per pipeline stage, ingestion and sizes.

Each app gets its own registry, so several apps in one process (as in the tests) keep separate counts.
Ingestion and size figures are read from the catalog and the index folders at scrape time.
"""

from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from storage.catalog import Catalog

# Seconds, from a millisecond BM25 lookup to a minute of CPU generation.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
UNMATCHED_ROUTE = "unmatched"


class Metrics:
    """The instruments that the middleware and routes update, and the text exposition of all of them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "domainrag_http_requests", "HTTP requests by method, route template and status code.",
            ["method", "route", "status"], registry=self.registry)
        self.request_seconds = Histogram(
            "domainrag_http_request_duration_seconds", "Time from request start to the end of the response.",
            ["method", "route"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram(
            "domainrag_pipeline_stage_duration_seconds",
            "Time spent in each stage of search and query, as reported in the response's timings_ms.",
            ["endpoint", "stage"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self._catalog_collector: _CatalogCollector | None = None

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.request_seconds.labels(method, route).observe(seconds)

    def observe_stages(self, endpoint: str, timings_ms: dict[str, float]) -> None:
        for stage, milliseconds in timings_ms.items():
            self.stage_seconds.labels(endpoint, stage).observe(milliseconds / 1000)

    def watch_catalog(self, catalog: Catalog, index_directory: Callable[[str], Path]) -> None:
        """Report ingestion totals and knowledge base sizes from this catalog on every scrape."""
        # A restarted app (a second lifespan) replaces the collector rather than exposing the figures twice.
        if self._catalog_collector is not None:
            self.registry.unregister(self._catalog_collector)
        self._catalog_collector = _CatalogCollector(catalog, index_directory)
        self.registry.register(self._catalog_collector)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _CatalogCollector(Collector):
    def __init__(self, catalog: Catalog, index_directory: Callable[[str], Path]) -> None:
        self.catalog = catalog
        self.index_directory = index_directory

    def collect(self) -> Iterator[Metric]:
        # Gauges rather than counters, because deleting a knowledge base deletes its jobs and lowers the sums.
        jobs = GaugeMetricFamily("domainrag_ingestion_jobs", "Ingestion jobs in the catalog by status.",
                                 labels=["status"])
        documents = GaugeMetricFamily(
            "domainrag_ingestion_documents",
            "Documents handled by the ingestion jobs in the catalog, by outcome (processed, failed, unchanged).",
            labels=["outcome"])
        totals = {"processed": 0, "failed": 0, "unchanged": 0}
        for row in self.catalog.job_totals():
            jobs.add_metric([row["status"]], row["jobs"])
            for outcome in totals:
                totals[outcome] += row[outcome]
        for outcome, value in totals.items():
            documents.add_metric([outcome], value)
        yield jobs
        yield documents

        kb_documents = GaugeMetricFamily("domainrag_knowledge_base_documents", "Documents per knowledge base.",
                                         labels=["knowledge_base"])
        kb_chunks = GaugeMetricFamily("domainrag_knowledge_base_chunks",
                                      "Chunks per knowledge base; every index of it holds one entry per chunk.",
                                      labels=["knowledge_base"])
        index_bytes = GaugeMetricFamily("domainrag_index_snapshot_bytes",
                                        "Size on disk of a knowledge base's last index snapshot.",
                                        labels=["knowledge_base"])
        for knowledge_base_id, document_count, chunk_count in self.catalog.knowledge_base_sizes():
            kb_documents.add_metric([knowledge_base_id], document_count)
            kb_chunks.add_metric([knowledge_base_id], chunk_count)
            index_bytes.add_metric([knowledge_base_id], _folder_bytes(self.index_directory(knowledge_base_id)))
        yield kb_documents
        yield kb_chunks
        yield index_bytes


def _folder_bytes(directory: Path) -> int:
    total = 0
    try:
        for path in directory.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                # A snapshot being written renames its temporary file away between listing and stat.
                continue
    except FileNotFoundError:
        return 0
    return total
