"""The process's shared components, built once from settings; routes reach them through deps.py."""

import logging
import threading
from dataclasses import dataclass, field
from typing import Generic, TypeVar
from collections.abc import Callable

from app.errors import InvalidInput, NotReady
from app.settings import Settings
from generation.base import Generator, GeneratorLoadError
from generation.registry import GeneratorPool
from retrievers.batching import QueryEmbeddingBatcher
from retrievers.embedders import Embedder
from retrievers.rerank import LLMReranker, RelevanceJudge, Reranker
from storage.catalog import Catalog
from storage.knowledge_base import IndexRegistry

logger = logging.getLogger(__name__)

T = TypeVar("T")


class LazyModel(Generic[T]):
    """A model loaded on a background thread so the service answers health checks while it loads."""

    def __init__(self, name: str, loader: Callable[[], T]) -> None:
        self.name = name
        self._loader = loader
        self._value: T | None = None
        self._error: Exception | None = None
        self._loaded = threading.Event()
        self._started = False
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load, name=f"load-{self.name}", daemon=True).start()

    def _load(self) -> None:
        try:
            self._value = self._loader()
            logger.info("model loaded", extra={"model": self.name})
        except Exception as error:  # reported to every request that needs the model
            self._error = error
            logger.error("model failed to load", extra={"model": self.name, "error": str(error)})
        finally:
            self._loaded.set()

    @property
    def is_ready(self) -> bool:
        return self._loaded.is_set() and self._error is None

    def get(self, timeout: float = 300.0) -> T:
        self.start()
        if not self._loaded.wait(timeout):
            raise NotReady(f"the {self.name} model is still loading; retry in a few seconds")
        if self._error is not None:
            raise NotReady(f"the {self.name} model failed to load: {self._error}")
        return self._value  # type: ignore[return-value]


@dataclass
class Services:
    settings: Settings
    catalog: Catalog
    embedder: Embedder
    generator: LazyModel[Generator]  # the default backbone, loaded at start-up
    generators: GeneratorPool
    indices: IndexRegistry
    query_embedder: QueryEmbeddingBatcher  # embeds the queries of concurrent searches in shared batches
    cross_encoder: LazyModel[Reranker] | None = None
    jobs: "object" = field(default=None)  # app.jobs.JobRunner, set by create_app to avoid a construction cycle

    def backbone(self, name: str | None) -> Generator:
        """Return a named backbone (the default when None): 422 for an unknown name, 503 when loading fails."""
        if name is None:
            return self.generator.get()
        if name not in self.generators.specs and name != self.generators.default:
            raise InvalidInput(f"unknown generator {name!r}; configured backbones: {sorted(self.generators.specs)}")
        try:
            return self.generators.get(name)
        except GeneratorLoadError as error:
            raise NotReady(f"generator {name!r} failed to load: {error}") from error

    def reranker(self, mode: str, generator_name: str | None = None) -> Reranker:
        """Return the reranker a request names; InvalidInput when this deployment cannot provide it."""
        if mode == "llm":
            generator = self.backbone(generator_name)
            if not isinstance(generator, RelevanceJudge):
                raise InvalidInput(f"rerank 'llm' needs a generator that scores relevance; {generator.name} does not")
            return LLMReranker(generator)
        if mode == "cross-encoder":
            if self.cross_encoder is None:
                raise InvalidInput("rerank 'cross-encoder' needs DOMAINRAG_CROSS_ENCODER set to a local "
                                   "sentence-transformers CrossEncoder directory")
            return self.cross_encoder.get()
        raise InvalidInput(f"rerank must be one of 'none', 'llm', 'cross-encoder', got {mode!r}")
