"""Named generator backbones: what settings declare, and the process-wide pool that loads each one once."""

import logging
import os
import threading
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from generation.base import Generator, GeneratorLoadError
from generation.extractive import ExtractiveGenerator
from generation.openai_backend import OpenAICompatibleGenerator
from generation.transformers_backend import TransformersGenerator, load_checkpoint, load_lora, packaged_smollm2_path

logger = logging.getLogger(__name__)


class BackboneSpec(BaseModel):
    """One backbone in the registry, as declared in DOMAINRAG_BACKBONES (a JSON object of name -> spec)."""

    kind: Literal["transformers", "peft", "openai", "extractive"]
    path: str | None = Field(None, description="Checkpoint directory or .gguf file; for 'peft', the adapter directory.")
    base: str | None = Field(None, description="For 'peft': the base backbone's name, or a checkpoint path.")
    url: str | None = Field(None, description="For 'openai': the API base URL, such as http://127.0.0.1:8080/v1.")
    model: str | None = Field(None, description="For 'openai': the served model name.")
    api_key_env: str | None = Field(None, description="For 'openai': environment variable holding the API key.")
    context_window: int | None = Field(None, ge=256)
    capable: bool = Field(False, description="Strong enough for structured tasks such as graph extraction.")

    @model_validator(mode="after")
    def _check_fields(self) -> "BackboneSpec":
        required = {"transformers": ["path"], "peft": ["path", "base"], "openai": ["url", "model"], "extractive": []}
        missing = [name for name in required[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a '{self.kind}' backbone needs {', '.join(missing)}")
        return self


def builtin_backbones() -> dict[str, BackboneSpec]:
    return {"smollm2": BackboneSpec(kind="transformers", path="packaged:smollm2"),
            "extractive": BackboneSpec(kind="extractive")}


def spec_for(name: str, specs: dict[str, BackboneSpec]) -> BackboneSpec:
    """Find a backbone by name; a name that is an existing path is taken as a transformers checkpoint."""
    if name in specs:
        return specs[name]
    if Path(name).exists():
        return BackboneSpec(kind="transformers", path=name)
    raise GeneratorLoadError(f"unknown generator backbone {name!r}; configured: {sorted(specs)}")


def _resolve_path(path: str) -> Path:
    return packaged_smollm2_path() if path == "packaged:smollm2" else Path(path)


def resolve_checkpoint(name: str, specs: dict[str, BackboneSpec], *, cache_root: Path):
    """Load the tokenizer and model of a local backbone, by name or path, for training."""
    spec = spec_for(name, specs)
    if spec.kind != "transformers":
        raise GeneratorLoadError(f"backbone {name!r} is a '{spec.kind}' backbone; training needs a local checkpoint")
    return load_checkpoint(_resolve_path(spec.path), cache_root=cache_root)


def load_backbone(name: str, specs: dict[str, BackboneSpec], *, cache_root: Path,
                  threads: int | None = None) -> Generator:
    spec = spec_for(name, specs)
    if spec.kind == "extractive":
        return ExtractiveGenerator()
    if spec.kind == "openai":
        api_key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        return OpenAICompatibleGenerator(name=name, url=spec.url, model=spec.model, api_key=api_key,
                                         context_window=spec.context_window or 4096)
    if spec.kind == "peft":
        base_spec = spec_for(spec.base, specs)
        if base_spec.kind != "transformers":
            raise GeneratorLoadError(f"the base of adapter backbone {name!r} must be a local checkpoint, "
                                     f"got a '{base_spec.kind}' backbone")
        tokenizer, model = load_lora(_resolve_path(base_spec.path), Path(spec.path), cache_root=cache_root)
    else:
        tokenizer, model = load_checkpoint(_resolve_path(spec.path), cache_root=cache_root)
    return TransformersGenerator(tokenizer, model, name=name, context_window=spec.context_window, threads=threads)


class GeneratorPool:
    """Loads each named backbone once per process, on first use, and shares it between requests."""

    def __init__(self, specs: dict[str, BackboneSpec], *, default: str, cache_root: Path,
                 threads: int | None = None, preloaded: dict[str, Generator] | None = None) -> None:
        self.specs = specs
        self.default = default
        self.cache_root = cache_root
        self.threads = threads
        self._loaded: dict[str, Generator] = dict(preloaded or {})
        self._errors: dict[str, Exception] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, name: str | None = None) -> Generator:
        """Return the named backbone (the default when None), loading it if needed; raises GeneratorLoadError."""
        name = name or self.default
        if name in self._loaded:
            return self._loaded[name]
        if name not in self.specs and not Path(name).exists():
            raise GeneratorLoadError(f"unknown generator backbone {name!r}; configured: {sorted(self.specs)}")
        with self._guard:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            if name not in self._loaded:
                try:
                    self._loaded[name] = load_backbone(name, self.specs, cache_root=self.cache_root,
                                                       threads=self.threads)
                except GeneratorLoadError as error:
                    self._errors[name] = error
                    raise
                self._errors.pop(name, None)
                logger.info("generator loaded", extra={"backbone": name})
        return self._loaded[name]

    def is_loaded(self, name: str | None = None) -> bool:
        return (name or self.default) in self._loaded

    def error(self, name: str | None = None) -> Exception | None:
        return self._errors.get(name or self.default)
