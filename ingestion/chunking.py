"""Token-aware chunking that splits at paragraphs, then sentences, then tokens.

Chunks are character spans of the normalised text. Consecutive chunks may overlap, and the text is restored
exactly by joining each chunk from where the previous one ended. Token counts come from the embedder's own
tokenizer, so no chunk is longer than the model reads.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from bisect import bisect_left

TokenOffsets = Callable[[str], list[tuple[int, int]]]

_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
# A sentence ends at . ! or ? (optionally followed by closing quotes or brackets) before whitespace.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s+|\n")


@dataclass(frozen=True)
class Chunk:
    start: int
    end: int
    text: str
    tokens: int


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


def _boundaries(text: str) -> list[int]:
    """Return candidate split points, paragraph and sentence ends, as sorted character positions."""
    points = {0, len(text)}
    points.update(match.end() for match in _PARAGRAPH_BREAK.finditer(text))
    points.update(match.end() for match in _SENTENCE_END.finditer(text))
    return sorted(points)


def chunk_text(text: str, *, size: int, overlap: int, token_offsets: TokenOffsets) -> list[Chunk]:
    """Split `text` into chunks of at most `size` tokens that overlap by at most `overlap` tokens."""
    validate_chunking(size, overlap)
    if not text.strip():
        return []
    token_starts = [start for start, _ in token_offsets(text)]

    def tokens_before(position: int) -> int:
        return bisect_left(token_starts, position)

    # Units: sentence-or-paragraph spans, with any unit longer than `size` cut at token boundaries.
    units: list[tuple[int, int, int]] = []
    boundaries = _boundaries(text)
    for start, end in zip(boundaries, boundaries[1:]):
        first, last = tokens_before(start), tokens_before(end)
        while last - first > size:
            cut = token_starts[first + size]
            units.append((start, cut, size))
            start, first = cut, first + size
        if end > start:
            units.append((start, end, last - first))

    chunks: list[Chunk] = []
    index = 0
    while index < len(units):
        # Step back over the previous chunk's last units for the overlap, and always take one new unit.
        first = index
        carried = 0
        while chunks and first > 0 and carried + units[first - 1][2] <= overlap and units[first - 1][0] >= chunks[-1].start:
            first -= 1
            carried += units[first][2]
        tokens = carried
        end = index
        while end < len(units) and (end == index or tokens + units[end][2] <= size):
            tokens += units[end][2]
            end += 1
        # A carried overlap that leaves no room for the new unit is dropped from the front.
        while tokens > size and first < index:
            tokens -= units[first][2]
            first += 1
        start_char, end_char = units[first][0], units[end - 1][1]
        chunk = text[start_char:end_char]
        if chunk.strip():
            chunks.append(Chunk(start=start_char, end=end_char, text=chunk, tokens=tokens))
        elif chunks:
            # Whitespace-only tail: extend the previous chunk so the spans still cover the text.
            last = chunks[-1]
            chunks[-1] = Chunk(start=last.start, end=end_char, text=text[last.start:end_char], tokens=last.tokens)
        index = end
    return chunks
