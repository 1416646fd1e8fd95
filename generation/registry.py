"""Build the generator that settings name."""

from pathlib import Path

from generation.base import Generator
from generation.extractive import ExtractiveGenerator
from generation.transformers_backend import TransformersGenerator, packaged_smollm2_path


def load_generator(name: str, *, cache_root: Path, threads: int | None = None) -> Generator:
    """'extractive' needs no model; 'smollm2' is the packaged GGUF; anything else is a path."""
    if name == "extractive":
        return ExtractiveGenerator()
    path = packaged_smollm2_path() if name == "smollm2" else Path(name)
    return TransformersGenerator(path, cache_root=cache_root, threads=threads)
