"""Property tests of the chunker's invariants on generated text, with a whitespace tokenizer."""

import re
import time

import pytest
from hypothesis import given, settings, strategies as st

from ingestion.chunking import Chunk, ChunkingError, chunk_text, validate_chunking
from ingestion.normalize import normalize_text

_WORD = re.compile(r"\S+")


def whitespace_offsets(text: str) -> list[tuple[int, int]]:
    return [match.span() for match in _WORD.finditer(text)]


def restore(chunks: list[Chunk]) -> str:
    """Join the chunks, skipping the part of each that repeats the previous chunk's end."""
    text, end = "", 0
    for chunk in chunks:
        text += chunk.text[end - chunk.start:]
        end = chunk.end
    return text


words = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=12)
separators = st.sampled_from([" ", " ", " ", ". ", "! ", "\n", "\n\n", "\t", "? "])
documents = st.lists(st.tuples(words, separators), min_size=0, max_size=300).map(
    lambda pairs: normalize_text("".join(word + separator for word, separator in pairs)))
sizes = st.integers(min_value=1, max_value=80).flatmap(
    lambda size: st.tuples(st.just(size), st.integers(min_value=0, max_value=size - 1)))


class TestChunkInvariants:
    @settings(max_examples=300, deadline=None)
    @given(text=documents, size_overlap=sizes)
    def test_chunks_within_token_limit(self, text, size_overlap):
        size, overlap = size_overlap
        for chunk in chunk_text(text, size=size, overlap=overlap, token_offsets=whitespace_offsets):
            assert len(whitespace_offsets(chunk.text)) <= size
            assert chunk.tokens <= size

    @settings(max_examples=300, deadline=None)
    @given(text=documents, size_overlap=sizes)
    def test_joining_minus_overlap_restores_text(self, text, size_overlap):
        size, overlap = size_overlap
        chunks = chunk_text(text, size=size, overlap=overlap, token_offsets=whitespace_offsets)
        assert restore(chunks) == text

    @settings(max_examples=300, deadline=None)
    @given(text=documents, size_overlap=sizes)
    def test_every_chunk_makes_progress(self, text, size_overlap):
        size, overlap = size_overlap
        chunks = chunk_text(text, size=size, overlap=overlap, token_offsets=whitespace_offsets)
        for previous, chunk in zip(chunks, chunks[1:]):
            assert chunk.start >= previous.start
            assert chunk.end > previous.end
            assert chunk.start <= previous.end
        for chunk in chunks:
            assert chunk.text == text[chunk.start:chunk.end]
            assert chunk.text.strip()

    @settings(max_examples=200, deadline=None)
    @given(text=documents, size_overlap=sizes, data=st.data())
    def test_no_chunk_crosses_a_section_start(self, text, size_overlap, data):
        size, overlap = size_overlap
        starts = sorted(set(data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(text) - 1)),
                                               max_size=5))))
        chunks = chunk_text(text, size=size, overlap=overlap, token_offsets=whitespace_offsets,
                            section_starts=starts)
        assert restore(chunks) == text
        for chunk in chunks:
            for start in starts:
                inside = chunk.start < start < chunk.end
                assert not (inside and text[chunk.start:start].strip() and text[start:chunk.end].strip())


class TestChunkingLimits:
    def test_overlap_not_below_size_is_rejected(self):
        with pytest.raises(ChunkingError, match=r"chunk_overlap \(32\) must be smaller than chunk_size \(32\)"):
            validate_chunking(32, 32)

    def test_size_over_embedder_limit_is_rejected(self):
        with pytest.raises(ChunkingError, match="exceeds the embedder's input limit of 256 tokens"):
            validate_chunking(300, 10, max_tokens=256)

    def test_unbroken_200_kb_line_finishes_quickly(self):
        text = "x" * 200_000
        started = time.perf_counter()
        chunks = chunk_text(text, size=64, overlap=8, token_offsets=whitespace_offsets)
        assert time.perf_counter() - started < 2.0
        assert restore(chunks) == text
        assert max(len(chunk.text) for chunk in chunks) <= 64 * 16

    def test_long_line_cut_by_tokens(self):
        text = " ".join(f"w{number}" for number in range(50_000))
        started = time.perf_counter()
        chunks = chunk_text(text, size=100, overlap=10, token_offsets=whitespace_offsets)
        assert time.perf_counter() - started < 5.0
        assert restore(chunks) == text
        assert all(len(whitespace_offsets(chunk.text)) <= 100 for chunk in chunks)
