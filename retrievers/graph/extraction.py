"""Entity extraction without a language model: capitalised names, acronyms, domain terms and short noun phrases.

The extractor reads plain text sentence by sentence and returns each sentence's entity mentions in order.
Relations are not extracted explicitly; the graph links entities that share a sentence or a chunk.

This is the default extractor. A knowledge base whose generator is marked capable extracts with it instead
(`retrievers.graph.llm_extraction`) and falls back to this one for a chunk whose model output stays invalid.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass

from retrievers.graph.normalisation import normalise_entity
from retrievers.text import ENGLISH_STOP_WORDS

# A sentence ends at ".", "!" or "?" followed by space and an upper-case letter, digit or opening mark, except
# after a lone capital initial such as the "W." in "E. W. Emo". Line breaks always end a sentence.
_SENTENCE_BREAK = re.compile(r"(?<!\b[A-Z]\.)(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])|\s*\n+\s*")
_TOKEN = re.compile(r"\w+(?:['\u2019\-\u2010\u2011\u2013/+]\w+)*\+?")
# Lower-case words that may sit inside a capitalised name: "Academy of Interactive Entertainment", "Les Films du
# Losange", "Ludwig van Beethoven".
_NAME_CONNECTORS = frozenset("of the de du des del della di da la le van von der den y for on upon".split())
# Phrases of lower-case content words longer than this are clauses rather than names.
MAX_PHRASE_WORDS = 4
MIN_WORD_CHARACTERS = 3
# A capitalised name may take up to this many following lower-case words when the longer name is a known entity,
# so "Northwind labs" joins "Northwind Labs" seen before.
MAX_KNOWN_EXTENSION_WORDS = 2


@dataclass(frozen=True)
class Mention:
    """One entity mention: its normalised key and the text as written."""

    key: str
    surface: str


@dataclass(frozen=True)
class Sentence:
    text: str
    mentions: tuple[Mention, ...]


def split_sentences(text: str) -> list[str]:
    return [part.strip() for part in _SENTENCE_BREAK.split(text) if part and part.strip()]


def _is_domain_term(token: str) -> bool:
    """Acronyms and gene or drug style names: IL-10, TNF-alpha, mRNA, p53, BRCA1, CD4+."""
    letters = sum(character.isalpha() for character in token)
    if letters == 0:
        return False
    has_digit = any(character.isdigit() for character in token)
    capitals = sum(character.isupper() for character in token)
    inner_capital = any(character.isupper() for character in token[1:])
    return has_digit or capitals >= 2 or (inner_capital and letters >= 2)


def _is_capitalised(token: str) -> bool:
    return token[0].isupper() or _is_domain_term(token)


def is_proper_name(surface: str) -> bool:
    """Whether a mention was found as a name (capitalised or a domain term) rather than as a lower-case phrase."""
    match = _TOKEN.search(surface)
    return match is not None and _is_capitalised(match.group())


class EntityExtractor:
    """Turns text into sentences with their entity mentions; stateless, so one instance can be shared."""

    def extract(self, text: str, *, known: Callable[[str], bool] | None = None) -> list[Sentence]:
        """Split `text` into sentences with their mentions; `known` returns whether a normalised key is an entity."""
        sentences = []
        for sentence_text in split_sentences(text):
            mentions = tuple(self._mentions(sentence_text, known))
            sentences.append(Sentence(text=sentence_text, mentions=mentions))
        return sentences

    def mentions(self, text: str, *, known: Callable[[str], bool] | None = None) -> list[Mention]:
        """Return every mention in `text`, in reading order, across sentences."""
        return [mention for sentence in self.extract(text, known=known) for mention in sentence.mentions]

    def _mentions(self, sentence: str, known: Callable[[str], bool] | None) -> list[Mention]:
        tokens = [(match.group(), match.start(), match.end()) for match in _TOKEN.finditer(sentence)]
        spans: list[tuple[int, int]] = []
        index = 0
        while index < len(tokens):
            end = self._name_end(tokens, sentence, index)
            if end > index and known is not None:
                end = self._known_extension(tokens, sentence, index, end, known)
            if end > index:
                spans.append((tokens[index][1], tokens[end - 1][2]))
                index = end
                continue
            end = self._phrase_end(tokens, sentence, index)
            if end > index:
                spans.append((tokens[index][1], tokens[end - 1][2]))
                index = end
                continue
            index += 1

        mentions = []
        for start, end in spans:
            surface = sentence[start:end]
            key = normalise_entity(surface)
            if key and not key.isdigit():
                mentions.append(Mention(key=key, surface=surface))
        return mentions

    def _name_end(self, tokens: list[tuple[str, int, int]], sentence: str, start: int) -> int:
        """Return the end of a capitalised name starting at `start`, or `start` when none starts there."""
        first = tokens[start][0]
        if not _is_capitalised(first) or first.lower() in ENGLISH_STOP_WORDS or first.isdigit():
            return start
        end = start + 1
        index = start + 1
        while index < len(tokens):
            if not _joined(sentence, tokens[index - 1], tokens[index]):
                break
            token = tokens[index][0]
            if _is_capitalised(token) and not token.isdigit():
                index += 1
                end = index
            elif (token in _NAME_CONNECTORS and tokens[index - 1][0][0].isupper() and index + 1 < len(tokens)
                  and tokens[index + 1][0][0].isupper()):
                index += 1
            else:
                break
        return end

    def _known_extension(self, tokens: list[tuple[str, int, int]], sentence: str, start: int, end: int,
                         known: Callable[[str], bool]) -> int:
        """Extend a name over following lower-case words when the longer name is a known entity."""
        best = end
        for extended in range(end + 1, min(end + MAX_KNOWN_EXTENSION_WORDS, len(tokens)) + 1):
            if not _joined(sentence, tokens[extended - 2], tokens[extended - 1]):
                break
            if not tokens[extended - 1][0].islower():
                break
            if known(normalise_entity(sentence[tokens[start][1]:tokens[extended - 1][2]])):
                best = extended
        return best

    def _phrase_end(self, tokens: list[tuple[str, int, int]], sentence: str, start: int) -> int:
        """Return the end of a run of 2 to MAX_PHRASE_WORDS lower-case content words, or `start`."""
        index = start
        while index < len(tokens) and _is_content_word(tokens[index][0]):
            if index > start and not _joined(sentence, tokens[index - 1], tokens[index]):
                break
            index += 1
        length = index - start
        if length < 2 or length > MAX_PHRASE_WORDS:
            return start
        return index


def _is_content_word(token: str) -> bool:
    return (token.islower() and len(token) >= MIN_WORD_CHARACTERS and token not in ENGLISH_STOP_WORDS
            and not token.isdigit())


def _joined(sentence: str, previous: tuple[str, int, int], current: tuple[str, int, int]) -> bool:
    """Whether two tokens are separated only by spaces, or by ". " after a capital initial."""
    gap = sentence[previous[2]:current[1]]
    if not gap.strip():
        return True
    return gap.strip() == "." and len(previous[0]) == 1 and previous[0].isupper()
