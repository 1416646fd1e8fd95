"""Structure-aware, token-aware chunking: split at sections, then paragraphs, then sentences, then tokens.

Chunks are character spans of the normalised text. Consecutive chunks may overlap, and the text is restored
exactly by joining each chunk from where the previous one ended. Token counts come from the embedder's own
tokenizer, so no chunk is longer than the model reads. A chunk never crosses a section start (a heading or
a page), and its overlap is never carried across one either.
"""

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

TokenOffsets = Callable[[str], list[tuple[int, int]]]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends at . ! or ? (optionally followed by closing quotes or brackets) before whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n")
# A chunk contains at most this many characters per token of its size. Ordinary English text averages roughly
# 4-6 characters per token (an estimate). A longer run is one huge token, such as a 200 KB line that a WordPiece
# tokenizer reads as a single [UNK], so it is cut by characters and no chunk grows without bound.
MAX_CHARS_PER_TOKEN = 16


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str
    tokens: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    tokens: int
    section: int


class ChunkingError(ValueError):
    pass


def validate_chunking(size: int, overlap: int, *, max_tokens: int | None = None) -> None:
    """Raise ChunkingError naming the bad value when a chunk size and overlap cannot work together."""
    if size < 1:
        raise ChunkingError(f"chunk_size must be at least 1 token, got {size}")
    if overlap < 0:
        raise ChunkingError(f"chunk_overlap must be 0 or more tokens, got {overlap}")
    if overlap >= size:
        raise ChunkingError(f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})")
    if max_tokens is not None and size > max_tokens:
        raise ChunkingError(f"chunk_size ({size}) exceeds the embedder's input limit of {max_tokens} tokens; "
                            f"use at most {max_tokens}")


def _boundaries(text: str, section_starts: Sequence[int]) -> list[int]:
    """Return candidate split points, section starts and paragraph and sentence ends, as sorted positions."""
    points = {0, len(text)}
    points.update(position for position in section_starts if 0 < position < len(text))
    points.update(match.end() for match in _PARAGRAPH_BREAK.finditer(text))
    points.update(match.end() for match in _SENTENCE_END.finditer(text))
    return sorted(points)


class _TokenIndex:
    def __init__(self, offsets: list[tuple[int, int]]) -> None:
        self.starts = [start for start, _ in offsets]
        self.ends = [end for _, end in offsets]

    def starting_before(self, position: int) -> int:
        return bisect_left(self.starts, position)

    def overlapping(self, start: int, end: int) -> int:
        """Count the tokens that share at least one character with [start, end)."""
        return max(0, bisect_left(self.starts, end) - bisect_right(self.ends, start))


def _units(text: str, size: int, section_starts: Sequence[int], tokens: _TokenIndex) -> list[_Unit]:
    """Cut the text at its boundaries into units of at most `size` tokens and `size * 16` characters."""
    sections = sorted(position for position in section_starts if 0 < position < len(text))
    max_chars = size * MAX_CHARS_PER_TOKEN
    units: list[_Unit] = []
    boundaries = _boundaries(text, sections)
    for start, end in zip(boundaries, boundaries[1:]):
        section = bisect_right(sections, start)
        first, last = tokens.starting_before(start), tokens.starting_before(end)
        while last - first > size:
            cut = tokens.starts[first + size]
            units.extend(_cut_long(start, cut, size, section, max_chars, tokens))
            start, first = cut, first + size
        if end > start:
            units.extend(_cut_long(start, end, last - first, section, max_chars, tokens))
    return units


def _cut_long(start: int, end: int, count: int, section: int, max_chars: int,
              tokens: _TokenIndex) -> list[_Unit]:
    if end - start <= max_chars:
        return [_Unit(start, end, count, section)]
    pieces = []
    while end - start > max_chars:
        # Cut at the last token start that fits, else inside the one huge token.
        first = tokens.starting_before(start + 1)
        last = tokens.starting_before(start + max_chars + 1)
        cut = tokens.starts[last - 1] if last > first else start + max_chars
        pieces.append(_Unit(start, cut, max(1, tokens.overlapping(start, cut)), section))
        start = cut
    pieces.append(_Unit(start, end, max(1, tokens.overlapping(start, end)), section))
    return pieces


def chunk_text(text: str, *, size: int, overlap: int, token_offsets: TokenOffsets,
               section_starts: Sequence[int] = ()) -> list[Chunk]:
    """Split `text` into chunks of at most `size` tokens and `size * 16` characters, overlapping by at most
    `overlap` tokens.

    `section_starts` are character positions where a new section begins; no chunk spans one.
    """
    validate_chunking(size, overlap)
    if not text.strip():
        return []
    units = _units(text, size, section_starts, _TokenIndex(token_offsets(text)))
    max_chars = size * MAX_CHARS_PER_TOKEN

    chunks: list[Chunk] = []
    index = 0
    while index < len(units):
        section = units[index].section
        # Step back over the previous chunk's last units for the overlap, and always take one new unit.
        first = index
        carried = 0
        while (chunks and first > 0 and units[first - 1].section == section
               and carried + units[first - 1].tokens <= overlap and units[first - 1].start >= chunks[-1].start):
            first -= 1
            carried += units[first].tokens
        tokens = carried
        end = index
        while end < len(units) and (end == index or (units[end].section == section
                                                     and tokens + units[end].tokens <= size
                                                     and units[end].end - units[first].start <= max_chars)):
            tokens += units[end].tokens
            end += 1
        # A carried overlap that leaves no room for the new unit is dropped from the front.
        while (tokens > size or units[end - 1].end - units[first].start > max_chars) and first < index:
            tokens -= units[first].tokens
            first += 1
        start_char, end_char = units[first].start, units[end - 1].end
        chunk = text[start_char:end_char]
        if chunk.strip():
            chunks.append(Chunk(start=start_char, end=end_char, text=chunk, tokens=tokens))
        elif chunks:
            # Whitespace-only tail: extend the previous chunk so the spans still cover the text.
            last = chunks[-1]
            chunks[-1] = Chunk(start=last.start, end=end_char, text=text[last.start:end_char], tokens=last.tokens)
        index = end
    return chunks
