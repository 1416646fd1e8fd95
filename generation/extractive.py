"""A generator with no model: answers with the passage sentences that share most terms with the question."""

import re
from collections.abc import Iterator

from generation.base import Message
from retrievers.text import Analyzer

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PASSAGE = re.compile(r"^\[(\d+)\][^\n]*\n\"\"\"\n(.*?)\n\"\"\"", re.DOTALL | re.MULTILINE)


class ExtractiveGenerator:
    """Picks up to three sentences from the passages in the prompt and cites each one."""

    name = "extractive"
    context_window = 4096

    def __init__(self, max_sentences: int = 3) -> None:
        self.max_sentences = max_sentences
        self._analyzer = Analyzer()

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def relevance(self, query: str, passages: list[str]) -> list[float]:
        """Return the share of the question's terms that each passage contains."""
        query_terms = set(self._analyzer.terms(query))
        if not query_terms:
            return [0.0] * len(passages)
        return [len(query_terms & set(self._analyzer.terms(passage))) / len(query_terms) for passage in passages]

    def stream(self, messages: list[Message], *, max_new_tokens: int) -> Iterator[str]:
        words = self.generate(messages, max_new_tokens=max_new_tokens).split(" ")
        for position, word in enumerate(words):
            yield word if position == 0 else " " + word

    def generate(self, messages: list[Message], *, max_new_tokens: int) -> str:
        prompt = messages[-1]["content"]
        question = prompt.rsplit("Question:", 1)[-1].split("\n", 1)[0]
        question_terms = set(self._analyzer.terms(question))
        scored = []
        for marker, body in _PASSAGE.findall(prompt):
            for position, sentence in enumerate(_SENTENCE.split(body)):
                overlap = len(question_terms & set(self._analyzer.terms(sentence)))
                if overlap:
                    scored.append((-overlap, int(marker), position, sentence.strip(), marker))
        if not scored:
            return "The provided documents do not answer the question."
        best = sorted(scored)[: self.max_sentences]
        # Present the chosen sentences in passage order so the answer reads as the sources do.
        best.sort(key=lambda item: (item[1], item[2]))
        words = " ".join(f"{sentence} [{marker}]" for _, _, _, sentence, marker in best).split()
        return " ".join(words[:max_new_tokens])
