"""A model already served behind an OpenAI-compatible chat completions endpoint (vLLM, llama.cpp server)."""

import json
import logging
from collections.abc import Iterator

import httpx

from generation.base import GenerationError, Message

logger = logging.getLogger(__name__)

# Without the model's tokenizer, tokens are estimated from characters; four characters per token is the usual
# estimate for English text with BPE vocabularies, so budgets computed from it are approximate.
CHARACTERS_PER_TOKEN = 4


class OpenAICompatibleGenerator:
    def __init__(self, *, name: str, url: str, model: str, api_key: str | None = None, context_window: int = 4096,
                 timeout: float = 120.0) -> None:
        self.name = name
        self.model = model
        self.context_window = context_window
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // CHARACTERS_PER_TOKEN)

    def _payload(self, messages: list[Message], max_new_tokens: int, stream: bool) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": max_new_tokens, "temperature": 0,
                "stream": stream}

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        try:
            response = self._http.post("/chat/completions", json=self._payload(messages, max_new_tokens, False))
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"].strip()
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
            raise GenerationError(f"backbone {self.name} at {self._http.base_url} failed: {error}") from error

    def stream(self, messages: list[Message], *, max_new_tokens: int) -> Iterator[str]:
        """Yield content deltas from the server's Server-Sent Events until its [DONE] event."""
        try:
            with self._http.stream("POST", "/chat/completions",
                                   json=self._payload(messages, max_new_tokens, True)) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        return
                    delta = json.loads(data)["choices"][0].get("delta", {}).get("content")
                    if delta:
                        yield delta
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
            raise GenerationError(f"backbone {self.name} at {self._http.base_url} failed mid-stream: {error}") from error
        raise GenerationError(f"backbone {self.name} at {self._http.base_url} closed the stream without [DONE]")
