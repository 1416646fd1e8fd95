"""Application factory: wires settings, catalog, models, indices and the ingestion worker into FastAPI."""

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.errors import install_error_handlers
from app.jobs import JobRunner
from app.limits import KeyLimits
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.routes import aliases, documents, graph, health, jobs, keys, knowledge_bases, search, tenants
from app.services import LazyModel, Services
from app.settings import Settings, get_settings
from generation.base import Generator, GeneratorLoadError
from generation.registry import GeneratorPool
from retrievers.batching import QueryEmbeddingBatcher
from retrievers.embedders import Embedder, load_embedder, set_torch_threads_of_current_thread
from retrievers.rerank import CrossEncoderReranker
from storage.catalog import Catalog
from storage.knowledge_base import GraphGeneratorResolver, IndexRegistry
from retrievers.milvus import MilvusStore

logger = logging.getLogger(__name__)

# The service loads only local model files; this keeps transformers and sentence-transformers off the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def capable_generator_resolver(catalog: Catalog, generators: GeneratorPool) -> GraphGeneratorResolver:
    """Map a knowledge base id to its backbone when that backbone is marked capable, else to None.

    A capable backbone that fails to load leaves the graph on rule-based extraction and extractive summaries.
    """
    def resolve(knowledge_base_id: str) -> Generator | None:
        knowledge_base = catalog.get_knowledge_base(knowledge_base_id)
        if knowledge_base is None:
            return None
        name = knowledge_base.generator or generators.default
        spec = generators.specs.get(name)
        if spec is None or not spec.capable:
            return None
        try:
            return generators.get(name)
        except GeneratorLoadError as error:
            logger.warning("capable backbone failed to load; the graph uses rule-based extraction",
                           extra={"backbone": name, "error": str(error)})
            return None

    return resolve


def build_services(settings: Settings, *, embedder: Embedder | None = None,
                   generator: Generator | None = None) -> Services:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    catalog = Catalog(settings.catalog_location, replica=settings.worker_name)
    embedder = embedder or load_embedder(settings.embedder, batch_size=settings.embed_batch_size)
    generators = GeneratorPool(settings.all_backbones, default=settings.generator,
                               cache_root=settings.data_dir / "models", threads=settings.torch_threads,
                               preloaded={settings.generator: generator} if generator is not None else None)
    # The default backbone loads in the background at start-up; /readyz reports when it is ready.
    generator_slot = LazyModel("generator", generators.get)
    indices = IndexRegistry(catalog=catalog, root=settings.data_dir / "kb", dimension=embedder.dimension,
                            embedder_name=embedder.name,
                            dense_approximate_threshold=settings.dense_approximate_threshold,
                            embedder=embedder, graph_generator=capable_generator_resolver(catalog, generators),
                            graph_index=settings.graph_index)
    # Connects on first use, so a service whose knowledge bases are all local never starts milvus-lite.
    indices.milvus = MilvusStore(settings.milvus_location,
                                 settings.milvus_token.get_secret_value() if settings.milvus_token else None)
    query_threads = settings.query_torch_threads
    query_embedder = QueryEmbeddingBatcher(
        embedder, max_batch_size=settings.query_batch_size, max_wait_s=settings.query_batch_wait_ms / 1000,
        workers=settings.query_embed_workers or os.cpu_count() or 1,
        worker_setup=(lambda: set_torch_threads_of_current_thread(query_threads)) if query_threads else None)
    cross_encoder = None
    if settings.cross_encoder is not None:
        cross_encoder = LazyModel("cross-encoder", lambda: CrossEncoderReranker(settings.cross_encoder))
    services = Services(settings=settings, catalog=catalog, embedder=embedder, generator=generator_slot,
                        generators=generators, indices=indices, query_embedder=query_embedder,
                        cross_encoder=cross_encoder)
    services.jobs = JobRunner(services)
    return services


def create_app(settings: Settings | None = None, *, embedder: Embedder | None = None,
               generator: Generator | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, embedder=embedder, generator=generator)
        app.state.services = services
        app.state.metrics.watch_catalog(services.catalog, services.indices.directory)
        services.generator.start()
        services.jobs.start()
        logger.info("service started", extra={"data_dir": str(settings.data_dir), "catalog": str(services.catalog),
                                              "replica": settings.worker_name, "embedder": services.embedder.name,
                                              "generator": settings.generator if generator is None else generator.name})
        try:
            yield
        finally:
            logger.info("service stopping; finishing the document being ingested")
            services.jobs.stop(timeout=settings.shutdown_timeout_s)
            services.query_embedder.close()
            services.indices.save_all()
            services.indices.close()
            services.catalog.close()
            logger.info("service stopped")

    app = FastAPI(title="domainrag", version="0.1.0", lifespan=lifespan,
                  description="Retrieval-augmented generation over per-tenant domain knowledge bases.")
    install_error_handlers(app)
    app.state.limits = KeyLimits(settings)
    app.state.metrics = Metrics()
    # The last middleware added runs first: request ids and metrics also cover the 413s of the body limit.
    app.add_middleware(BodyLimitMiddleware, max_json_body_bytes=settings.max_json_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    for router in (health.router, tenants.router, keys.admin_router, keys.tenant_router, knowledge_bases.router,
                   aliases.router, documents.router, jobs.router, search.router, graph.router):
        app.include_router(router)
    return app
