"""The entity graph of one knowledge base: entities, their mentions per chunk, and weighted relations.

Entities are networkx nodes keyed by an integer id. Two entities are related when they are mentioned close
together in one sentence; the edge weight counts such co-occurrences. Co-occurrence within a chunk is kept as
the mention lists themselves (chunk -> entities), which local search walks as a bipartite graph, because
linking every pair of entities in a chunk grows quadratically with the chunk's entity count.
"""

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

from retrievers.graph.extraction import Sentence

# A mention is related only to the next few mentions of its sentence. This keeps the edge count of a long sentence
# that lists many names linear, and nearby mentions are the likelier relations anyway.
RELATION_WINDOW = 3
SNAPSHOT_FILE = "graph.npz"
# Part of the snapshot; a snapshot written by an extractor with another format or version is rebuilt.
SNAPSHOT_FORMAT = 1
# The walk matrix catches up with a store by replaying its logged edge changes. Bulk ingestion with no graph search
# in between can log more than this many, so the log is then dropped and the next search builds the matrix in full.
# That costs about as much as a replay would, and it keeps the log's memory bounded.
MAX_CHANGE_LOG = 200_000

# Edge kinds in the change log: a relation between two entities, or a mention of an entity by a chunk.
RELATION = 0
MENTION = 1


@dataclass
class ChunkEntities:
    """What the graph keeps of one chunk: entity ids per sentence, and the sentences that relate two entities."""

    sentences: list[list[int]]
    linking_sentences: list[tuple[str, list[int]]]

    def entity_counts(self) -> Counter[int]:
        return Counter(entity for sentence in self.sentences for entity in sentence)


def relation_pairs(sentences: list[list[int]]) -> Counter[tuple[int, int]]:
    """Count related entity pairs, smaller id first, over mentions at most RELATION_WINDOW apart in a sentence."""
    pairs: Counter[tuple[int, int]] = Counter()
    for entities in sentences:
        for position, first in enumerate(entities):
            for second in entities[position + 1:position + 1 + RELATION_WINDOW]:
                if first != second:
                    pairs[(min(first, second), max(first, second))] += 1
    return pairs


def _utf8_json(value: object) -> np.ndarray:
    """Encode a value as UTF-8 JSON bytes; numpy string arrays would pad every string to the longest in UTF-32."""
    return np.frombuffer(json.dumps(value, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _from_utf8_json(array: np.ndarray) -> object:
    return json.loads(array.tobytes().decode("utf-8"))


class GraphStore:
    """Entities, mentions and relations, updated in place as chunks come and go."""

    def __init__(self) -> None:
        self.graph = nx.Graph()
        self.entity_ids: dict[str, int] = {}
        self.keys: dict[int, str] = {}
        self.names: dict[int, str] = {}  # entity id -> the name as first written
        self.entity_chunks: dict[int, dict[int, int]] = {}  # entity id -> {chunk rowid: mention count}
        self.chunks: dict[int, ChunkEntities] = {}
        self._next_entity_id = 0
        self.version = 0  # incremented on every change, so derived structures know when they are stale
        self.word_index: dict[str, set[int]] = {}  # word of a normalised key -> entities whose key contains it
        # Edge weight changes in order, as (kind, entity, other entity or chunk rowid, weight change). The entry at
        # index i of the list is change number log_start + i.
        self.change_log: list[tuple[int, int, int, float]] = []
        self.log_start = 0

    @property
    def log_end(self) -> int:
        return self.log_start + len(self.change_log)

    def changes_since(self, position: int) -> list[tuple[int, int, int, float]] | None:
        """Return the edge changes from `position` on, or None when some of them were dropped."""
        if position < self.log_start:
            return None
        return self.change_log[position - self.log_start:]

    def forget_changes_before(self, position: int) -> None:
        """Drop logged changes before `position`, once the walk matrix has replayed them."""
        drop = min(max(position - self.log_start, 0), len(self.change_log))
        if drop:
            del self.change_log[:drop]
            self.log_start += drop

    def _log(self, kind: int, first: int, second: int, weight: float) -> None:
        self.change_log.append((kind, first, second, weight))
        if len(self.change_log) > MAX_CHANGE_LOG:
            self.log_start += len(self.change_log)
            self.change_log = []

    def __len__(self) -> int:
        return len(self.chunks)

    @property
    def entity_count(self) -> int:
        return len(self.entity_ids)

    def document_frequency(self, entity: int) -> int:
        return len(self.entity_chunks.get(entity, ()))

    def add_chunk(self, rowid: int, sentences: list[Sentence]) -> None:
        """Index one chunk's extracted sentences; a chunk already present is replaced."""
        if rowid in self.chunks:
            self.delete_chunk(rowid)
        sentence_entities = []
        linking_sentences = []
        for sentence in sentences:
            entities = [self._entity_id(mention.key, mention.surface) for mention in sentence.mentions]
            sentence_entities.append(entities)
            if len(set(entities)) >= 2:
                linking_sentences.append((sentence.text, sorted(set(entities))))
        chunk = ChunkEntities(sentences=[entities for entities in sentence_entities if entities],
                              linking_sentences=linking_sentences)
        self._attach(rowid, chunk)

    def _attach(self, rowid: int, chunk: ChunkEntities) -> None:
        self.chunks[rowid] = chunk
        for entity, count in chunk.entity_counts().items():
            self.entity_chunks.setdefault(entity, {})[rowid] = count
            self.graph.add_node(entity)
            self._log(MENTION, entity, rowid, count)
        for (first, second), count in relation_pairs(chunk.sentences).items():
            if self.graph.has_edge(first, second):
                self.graph[first][second]["weight"] += count
            else:
                self.graph.add_edge(first, second, weight=count)
            self._log(RELATION, first, second, count)
        self.version += 1

    def delete_chunk(self, rowid: int) -> None:
        """Remove a chunk's mentions and relations, and every entity left with no mention."""
        chunk = self.chunks.pop(rowid, None)
        if chunk is None:
            return
        for (first, second), count in relation_pairs(chunk.sentences).items():
            if self.graph.has_edge(first, second):
                weight = self.graph[first][second]["weight"] - count
                if weight <= 0:
                    self.graph.remove_edge(first, second)
                else:
                    self.graph[first][second]["weight"] = weight
                self._log(RELATION, first, second, -count)
        for entity in chunk.entity_counts():
            mentions = self.entity_chunks.get(entity)
            if mentions is None:
                continue
            count = mentions.pop(rowid, None)
            if count is not None:
                self._log(MENTION, entity, rowid, -count)
            if not mentions:
                self._remove_entity(entity)
        self.version += 1

    def _entity_id(self, key: str, surface: str) -> int:
        entity = self.entity_ids.get(key)
        if entity is None:
            entity = self._next_entity_id
            self._next_entity_id += 1
            self.entity_ids[key] = entity
            self.keys[entity] = key
            self.names[entity] = surface
            for word in key.split(" "):
                self.word_index.setdefault(word, set()).add(entity)
        return entity

    def _remove_entity(self, entity: int) -> None:
        del self.entity_chunks[entity]
        key = self.keys.pop(entity)
        del self.entity_ids[key]
        del self.names[entity]
        for word in key.split(" "):
            entities = self.word_index.get(word)
            if entities is not None:
                entities.discard(entity)
                if not entities:
                    del self.word_index[word]
        if self.graph.has_node(entity):
            self.graph.remove_node(entity)

    def save(self, directory: Path) -> None:
        """Write the mentions of every chunk to one file (temporary file, fsync, rename); relations follow from them."""
        directory.mkdir(parents=True, exist_ok=True)
        entity_list = sorted(self.names)
        rowids = sorted(self.chunks)
        sentence_lengths: list[int] = []
        sentence_counts: list[int] = []
        mention_ids: list[int] = []
        linking = []
        for rowid in rowids:
            chunk = self.chunks[rowid]
            sentence_counts.append(len(chunk.sentences))
            for entities in chunk.sentences:
                sentence_lengths.append(len(entities))
                mention_ids.extend(entities)
            linking.append(chunk.linking_sentences)
        temporary = directory / (SNAPSHOT_FILE + ".tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, format=np.array([SNAPSHOT_FORMAT]),
                     entity_ids=np.array(entity_list, dtype=np.int64),
                     entity_keys=_utf8_json([self.keys[entity] for entity in entity_list]),
                     entity_names=_utf8_json([self.names[entity] for entity in entity_list]),
                     rowids=np.array(rowids, dtype=np.int64),
                     sentence_counts=np.array(sentence_counts, dtype=np.int64),
                     sentence_lengths=np.array(sentence_lengths, dtype=np.int64),
                     mention_ids=np.array(mention_ids, dtype=np.int64),
                     linking=_utf8_json(linking))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, directory / SNAPSHOT_FILE)

    @classmethod
    def read(cls, directory: Path) -> "GraphStore":
        """Read a store written by `save`, replaying each chunk's mentions to rebuild the relations."""
        with np.load(directory / SNAPSHOT_FILE, allow_pickle=False) as arrays:
            snapshot_format = int(arrays["format"][0])
            if snapshot_format != SNAPSHOT_FORMAT:
                raise ValueError(f"graph snapshot in {directory} has format {snapshot_format}, expected "
                                 f"{SNAPSHOT_FORMAT}; it will be rebuilt from the catalog")
            entity_ids = arrays["entity_ids"].tolist()
            keys = _from_utf8_json(arrays["entity_keys"])
            names = _from_utf8_json(arrays["entity_names"])
            rowids = arrays["rowids"].tolist()
            sentence_counts = arrays["sentence_counts"].tolist()
            sentence_lengths = arrays["sentence_lengths"].tolist()
            mention_ids = arrays["mention_ids"].tolist()
            linking = _from_utf8_json(arrays["linking"])

        store = cls()
        store.entity_ids = dict(zip(keys, entity_ids))
        store.keys = dict(zip(entity_ids, keys))
        store.names = dict(zip(entity_ids, names))
        store._next_entity_id = max(entity_ids, default=-1) + 1
        for key, entity in store.entity_ids.items():
            for word in key.split(" "):
                store.word_index.setdefault(word, set()).add(entity)
        sentence_index = 0
        mention_index = 0
        for rowid, count, linking_sentences in zip(rowids, sentence_counts, linking):
            sentences = []
            for length in sentence_lengths[sentence_index:sentence_index + count]:
                sentences.append(mention_ids[mention_index:mention_index + length])
                mention_index += length
            sentence_index += count
            linking_sentences = [(text, entities) for text, entities in linking_sentences]
            store._attach(rowid, ChunkEntities(sentences=sentences, linking_sentences=linking_sentences))
        # A matrix built from the loaded store starts from the store as it is, not from a replay of its loading.
        store.change_log = []
        store.log_start = 0
        return store
