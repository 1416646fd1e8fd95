"""Deterministic stand-ins for the embedder and generator, so API tests run in milliseconds."""

import hashlib
import re

import numpy as np

from generation.base import Message
from retrievers.text import Analyzer

_WORD = re.compile(r"\S+")


class FakeEmbedder:
    """Hashes each stemmed term into one of 64 dimensions: texts sharing terms get similar vectors."""

    name = "fake-embedder"
    dimension = 64
    max_tokens = 256

    def __init__(self) -> None:
        self._analyzer = Analyzer()
        self.calls = 0

    def embed(self, texts: list[str], *, is_query: bool = False) -> np.ndarray:
        self.calls += 1
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for term in self._analyzer.terms(text):
                bucket = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "little")
                vectors[row, bucket % self.dimension] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1.0, norms)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _WORD.finditer(text)]


class FakeGenerator:
    """Answers with the first sentence of passage [1] and cites it, so citation mapping is testable."""

    name = "fake-generator"
    context_window = 2048

    def __init__(self) -> None:
        self.prompts: list[list[Message]] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, messages: list[Message]) -> int:
        # A chat template adds a few tokens of its own around each message.
        return sum(self.count_tokens(message["content"]) + 4 for message in messages)

    def relevance(self, query: str, passages: list[str]) -> list[float]:
        """Score a passage by how many query words it contains, so a reranked order is predictable."""
        words = set(re.findall(r"\w+", query.lower()))
        return [float(len(words & set(re.findall(r"\w+", passage.lower())))) for passage in passages]

    def stream(self, messages: list[Message], *, max_new_tokens: int):
        for position, word in enumerate(self.generate(messages, max_new_tokens=max_new_tokens).split(" ")):
            yield word if position == 0 else " " + word

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        self.prompts.append(messages)
        body = messages[-1]["content"]
        match = re.search(r"\[1\][^\n]*\n\"\"\"\n(.+?)(?:\.|\n)", body)
        first = match.group(1).strip() if match else "no context"
        return f"{first} [1]."


class ScriptedGenerator(FakeGenerator):
    """Returns the next scripted reply on each call, or raises it when the reply is an exception.

    Once the script runs out, it repeats the last reply. Used to test extraction and summaries by a capable
    backbone: valid JSON, invalid JSON and a failing backbone.
    """

    name = "scripted-generator"

    def __init__(self, replies: list["str | Exception"]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.calls = 0

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        self.prompts.append(messages)
        reply = self.replies[min(self.calls, len(self.replies) - 1)]
        self.calls += 1
        if isinstance(reply, Exception):
            raise reply
        return reply
