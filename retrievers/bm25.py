"""BM25 over an inverted index with incremental add and delete.

Postings live in immutable segments (term-major CSR arrays, like Lucene's segments). New chunks collect in a
small buffer that becomes a segment when searched or when it fills; the smaller segments merge when there are
too many. Deleted chunks are masked out at once and purged when the index is saved or when they pile up.
Document frequencies and the collection size keep counting deleted chunks until they are purged, as in
Lucene, so scores drift slightly between a delete and the purge.
"""

import math
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrievers.base import Hit, IndexedChunk
from retrievers.text import Analyzer

# Lucene's defaults; general across domains rather than tuned to one collection.
DEFAULT_K1 = 1.2
DEFAULT_B = 0.75
BUFFER_LIMIT = 2048
MAX_SEGMENTS = 8
# A merge that overflows MAX_SEGMENTS rewrites every segment, purging deleted chunks, once more than this share
# of positions belongs to deleted chunks; otherwise it merges only the small segments.
PURGE_DELETED_SHARE = 0.2


@dataclass
class _Segment:
    term_ids: np.ndarray  # sorted unique term ids present in this segment
    pointers: np.ndarray  # postings of term_ids[i] are documents[pointers[i]:pointers[i + 1]]
    documents: np.ndarray  # internal document positions, int32
    frequencies: np.ndarray  # term frequencies, float32

    def postings(self, term_id: int) -> tuple[np.ndarray, np.ndarray] | None:
        index = np.searchsorted(self.term_ids, term_id)
        if index == len(self.term_ids) or self.term_ids[index] != term_id:
            return None
        start, end = self.pointers[index], self.pointers[index + 1]
        return self.documents[start:end], self.frequencies[start:end]


def _build_segment(term_ids: np.ndarray, documents: np.ndarray, frequencies: np.ndarray) -> _Segment:
    order = np.argsort(term_ids, kind="stable")
    term_ids, documents, frequencies = term_ids[order], documents[order], frequencies[order]
    unique_terms, starts = np.unique(term_ids, return_index=True)
    pointers = np.append(starts, len(term_ids)).astype(np.int64)
    return _Segment(unique_terms.astype(np.int64), pointers, documents.astype(np.int32),
                    frequencies.astype(np.float32))


class BM25Retriever:
    name = "bm25"

    def __init__(self, *, analyzer: Analyzer | None = None, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> None:
        if k1 < 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.analyzer = analyzer or Analyzer()
        self.k1 = k1
        self.b = b
        self._vocabulary: dict[str, int] = {}
        self._document_frequency = np.zeros(0, dtype=np.int64)
        self._rowids = np.zeros(0, dtype=np.int64)
        self._lengths = np.zeros(0, dtype=np.float32)
        self._alive = np.zeros(0, dtype=bool)
        self._position: dict[int, int] = {}
        self._segments: list[_Segment] = []
        self._buffer: list[tuple[int, Counter[int]]] = []
        self._live_count = 0
        self._live_length = 0.0
        # Per-position length normalisation k1 * (1 - b + b * length / average length), rebuilt on first search
        # after any change, because the average length moves with every add and delete.
        self._norms: np.ndarray | None = None
        # Searches run side by side under the knowledge base's read lock, yet the first search after a write
        # turns the buffer into a segment and may merge. This lock lets one search do that while the others
        # wait, so none of them scores against arrays that a merge is renumbering.
        self._flush_lock = threading.Lock()

    def __len__(self) -> int:
        return self._live_count

    def add(self, chunks: list[IndexedChunk]) -> None:
        self.delete([chunk.rowid for chunk in chunks if chunk.rowid in self._position])
        start = len(self._rowids)
        lengths = np.zeros(len(chunks), dtype=np.float32)
        for offset, chunk in enumerate(chunks):
            counts: Counter[int] = Counter()
            for term in self.analyzer.terms(chunk.text):
                term_id = self._vocabulary.setdefault(term, len(self._vocabulary))
                counts[term_id] += 1
            self._buffer.append((start + offset, counts))
            self._position[chunk.rowid] = start + offset
            lengths[offset] = sum(counts.values())

        if len(self._vocabulary) > len(self._document_frequency):
            grown = np.zeros(max(len(self._vocabulary), 2 * len(self._document_frequency)), dtype=np.int64)
            grown[:len(self._document_frequency)] = self._document_frequency
            self._document_frequency = grown
        for _, counts in self._buffer[len(self._buffer) - len(chunks):]:
            self._document_frequency[list(counts)] += 1

        self._rowids = np.concatenate([self._rowids, np.array([c.rowid for c in chunks], dtype=np.int64)])
        self._lengths = np.concatenate([self._lengths, lengths])
        self._alive = np.concatenate([self._alive, np.ones(len(chunks), dtype=bool)])
        self._live_count += len(chunks)
        self._live_length += float(lengths.sum())
        self._norms = None
        if len(self._buffer) >= BUFFER_LIMIT:
            self._flush()

    def delete(self, rowids: list[int]) -> None:
        for rowid in rowids:
            position = self._position.pop(rowid, None)
            if position is None or not self._alive[position]:
                continue
            self._alive[position] = False
            self._live_count -= 1
            self._live_length -= float(self._lengths[position])
            self._norms = None

    def search(self, query: str, query_embedding: np.ndarray | None = None, top_k: int = 10) -> list[Hit]:
        with self._flush_lock:
            self._flush()
            norms = self._document_norms()
        term_ids = sorted({self._vocabulary[term] for term in self.analyzer.terms(query) if term in self._vocabulary})
        if not term_ids or self._live_count == 0:
            return []

        # Document frequencies count deleted chunks until they are purged, so the collection size they are
        # compared with must count them too; against the live count a churned term's idf turned negative.
        positions = len(self._rowids)
        scores = np.zeros(positions, dtype=np.float32)
        for term_id in term_ids:
            frequency = int(self._document_frequency[term_id])
            idf = np.float32(math.log(1.0 + (positions - frequency + 0.5) / (frequency + 0.5)))
            weight = idf * np.float32(self.k1 + 1.0)
            for segment in self._segments:
                postings = segment.postings(term_id)
                if postings is None:
                    continue
                documents, frequencies = postings
                # A document appears once in a term's postings, so fancy-index += adds each score once.
                scores[documents] += weight * frequencies / (frequencies + norms[documents])

        if self._live_count < len(self._rowids):
            scores[~self._alive] = 0.0
        candidates = np.flatnonzero(scores > 0)
        if len(candidates) > top_k:
            candidates = candidates[np.argpartition(-scores[candidates], top_k - 1)[:top_k]]
        order = candidates[np.lexsort((self._rowids[candidates], -scores[candidates]))]
        return [Hit(rowid=int(self._rowids[i]), score=float(scores[i]), source=self.name) for i in order]

    def _document_norms(self) -> np.ndarray:
        if self._norms is None or len(self._norms) != len(self._lengths):
            # Guards against division by zero when every chunk has been deleted.
            average_length = max(self._live_length / max(self._live_count, 1), 1.0)
            self._norms = (self.k1 * (1.0 - self.b + self.b * self._lengths / average_length)).astype(np.float32)
        return self._norms

    def _flush(self) -> None:
        self._buffer_to_segment()
        if len(self._segments) <= MAX_SEGMENTS:
            return
        dead = len(self._rowids) - self._live_count
        if dead > PURGE_DELETED_SHARE * len(self._rowids):
            self._merge()
        else:
            self._merge_smallest()

    def _merge_smallest(self) -> None:
        """Merge the smaller half of the segments into one, keeping positions and deleted chunks as they are.

        Merging everything on each overflow rewrote the whole index every few thousand chunks, which made
        building a million-chunk index quadratic. Merging the small ones keeps segment sizes roughly
        geometric, so each posting is rewritten about log(chunks) times.
        """
        ordered = sorted(self._segments, key=lambda segment: len(segment.documents))
        count = len(ordered) - MAX_SEGMENTS // 2
        merging, kept = ordered[:count], ordered[count:]
        terms = np.concatenate([np.repeat(segment.term_ids, np.diff(segment.pointers)) for segment in merging])
        documents = np.concatenate([segment.documents for segment in merging])
        frequencies = np.concatenate([segment.frequencies for segment in merging])
        self._segments = [*kept, _build_segment(terms, documents, frequencies)]

    def _buffer_to_segment(self) -> None:
        if not self._buffer:
            return
        term_ids, documents, frequencies = [], [], []
        for position, counts in self._buffer:
            term_ids.extend(counts)
            documents.extend([position] * len(counts))
            frequencies.extend(counts.values())
        self._segments.append(_build_segment(np.array(term_ids, dtype=np.int64), np.array(documents, dtype=np.int32),
                                             np.array(frequencies, dtype=np.float32)))
        self._buffer = []

    def _merge(self) -> None:
        """Merge every segment into one, dropping deleted chunks and renumbering positions."""
        self._buffer_to_segment()
        keep = np.flatnonzero(self._alive)
        renumber = np.full(len(self._rowids), -1, dtype=np.int64)
        renumber[keep] = np.arange(len(keep))
        term_parts = [np.zeros(0, dtype=np.int64)]
        document_parts = [np.zeros(0, dtype=np.int64)]
        frequency_parts = [np.zeros(0, dtype=np.float32)]
        for segment in self._segments:
            terms = np.repeat(segment.term_ids, np.diff(segment.pointers))
            live = self._alive[segment.documents]
            term_parts.append(terms[live])
            document_parts.append(renumber[segment.documents[live]])
            frequency_parts.append(segment.frequencies[live])
        terms = np.concatenate(term_parts)
        self._segments = [_build_segment(terms, np.concatenate(document_parts), np.concatenate(frequency_parts))]
        self._document_frequency = np.bincount(terms, minlength=len(self._vocabulary)).astype(np.int64)
        self._rowids = self._rowids[keep]
        self._lengths = self._lengths[keep]
        self._alive = np.ones(len(keep), dtype=bool)
        self._position = {int(rowid): i for i, rowid in enumerate(self._rowids)}
        self._norms = None

    def save(self, directory: Path) -> None:
        """Write one merged segment and the vocabulary as one file: temporary file, fsync, rename."""
        self._merge()
        directory.mkdir(parents=True, exist_ok=True)
        segment = self._segments[0]
        temporary = directory / "bm25.npz.tmp"
        with open(temporary, "wb") as handle:
            np.savez(handle, term_ids=segment.term_ids, pointers=segment.pointers, documents=segment.documents,
                     frequencies=segment.frequencies, rowids=self._rowids, lengths=self._lengths,
                     vocabulary=np.array(list(self._vocabulary), dtype=str), parameters=np.array([self.k1, self.b]))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / "bm25.npz")

    def load(self, directory: Path) -> None:
        with np.load(directory / "bm25.npz", allow_pickle=False) as arrays:
            segment = _Segment(arrays["term_ids"], arrays["pointers"], arrays["documents"], arrays["frequencies"])
            rowids, lengths = arrays["rowids"], arrays["lengths"]
            vocabulary = arrays["vocabulary"].tolist()
            self.k1, self.b = (float(value) for value in arrays["parameters"])
        if len(segment.term_ids) and segment.term_ids[-1] >= len(vocabulary):
            raise ValueError(f"BM25 snapshot in {directory} refers to terms missing from its vocabulary")
        self._vocabulary = {term: i for i, term in enumerate(vocabulary)}
        self._segments = [segment]
        self._buffer = []
        self._rowids, self._lengths = rowids, lengths
        self._alive = np.ones(len(rowids), dtype=bool)
        self._position = {int(rowid): i for i, rowid in enumerate(rowids)}
        self._document_frequency = np.bincount(np.repeat(segment.term_ids, np.diff(segment.pointers)),
                                               minlength=len(self._vocabulary)).astype(np.int64)
        self._live_count = len(rowids)
        self._live_length = float(lengths.sum())
        self._norms = None
