"""Entity and relation extraction by a language model, GraphRAG-style, for backbones marked capable.

The model is asked for one JSON object per chunk in a strict schema, validated with pydantic. Output that does
not parse or validate is asked for once more, and a second failure, or a backbone error, makes that chunk fall
back to the rule-based extractor. Nothing here fails an ingestion.

The result has the shape of the rule-based extractor's output, so the store needs nothing new. Each relation
becomes one "sentence" that mentions its two entities, which relates the pair in the graph and lets a community
summary quote the relation. Each entity that takes part in no relation becomes a sentence of its own.
"""

import logging
import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from generation.base import Generator, Message
from retrievers.graph.extraction import EntityExtractor, Mention, Sentence
from retrievers.graph.normalisation import normalise_entity

logger = logging.getLogger(__name__)

# Chunks are a few hundred tokens, so a chunk's entities and relations fit in this many generated tokens.
MAX_EXTRACTION_TOKENS = 512
ATTEMPTS = 2  # the first request and one retry

SYSTEM_PROMPT = """You extract a knowledge graph from a passage. Answer with one JSON object and nothing else:
{"entities": [{"name": "...", "type": "..."}], "relations": [{"source": "...", "target": "...", "description": "..."}]}
- entities: the people, organisations, places, works, events, genes, drugs, diseases and other named things or \
technical terms in the passage; "name" as written in the passage, "type" one short word.
- relations: pairs of those entities that the passage relates; "source" and "target" must be names from \
"entities"; "description" says how they are related, in a few words.
Use only the passage. Use empty lists when there is nothing to extract."""


class ExtractedEntity(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    name: str = Field(min_length=1, max_length=200)
    type: str = Field("", max_length=60)


class ExtractedRelation(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source: str = Field(min_length=1, max_length=200)
    target: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=300)


class Extraction(BaseModel):
    """The only accepted output: entities, and relations between entities of that list."""

    model_config = ConfigDict(extra="forbid")

    entities: list[ExtractedEntity] = Field(max_length=200)
    relations: list[ExtractedRelation] = Field(default_factory=list, max_length=400)

    @model_validator(mode="after")
    def _relations_name_entities(self) -> "Extraction":
        keys = {normalise_entity(entity.name) for entity in self.entities}
        for relation in self.relations:
            for end in (relation.source, relation.target):
                if normalise_entity(end) not in keys:
                    raise ValueError(f"relation end {end!r} is not among the entities")
        return self


_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


def parse_extraction(text: str) -> Extraction:
    """Validate a model's output: a JSON object, optionally inside a Markdown code fence. Raises ValueError."""
    body = _FENCE.sub("", text.strip())
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        raise ValueError("invalid extraction output: no JSON object found")
    try:
        return Extraction.model_validate_json(body[start:end + 1])
    except ValidationError as error:
        raise ValueError(f"invalid extraction output: {error.error_count()} schema errors, first: "
                         f"{error.errors()[0]['msg']}") from error


def extraction_sentences(extraction: Extraction) -> list[Sentence]:
    """Turn a validated extraction into sentences of mentions, one per relation and one per unrelated entity."""
    surfaces: dict[str, str] = {}
    for entity in extraction.entities:
        key = normalise_entity(entity.name)
        if key and not key.isdigit():
            surfaces.setdefault(key, entity.name)
    sentences = []
    related: set[str] = set()
    for relation in extraction.relations:
        source, target = normalise_entity(relation.source), normalise_entity(relation.target)
        if source not in surfaces or target not in surfaces or source == target:
            continue
        related.update((source, target))
        text = " ".join(part for part in (surfaces[source], relation.description, surfaces[target]) if part)
        sentences.append(Sentence(text=text, mentions=(Mention(key=source, surface=surfaces[source]),
                                                        Mention(key=target, surface=surfaces[target]))))
    for key, surface in surfaces.items():
        if key not in related:
            sentences.append(Sentence(text=surface, mentions=(Mention(key=key, surface=surface),)))
    return sentences


class LLMExtractor:
    """Extracts with a generator, falling back per chunk to a rule-based extractor."""

    def __init__(self, generator: Generator, *, fallback: EntityExtractor | None = None) -> None:
        self.generator = generator
        self.fallback = fallback or EntityExtractor()
        self.failures = 0  # chunks that fell back, for logs and tests

    def messages(self, text: str) -> list[Message]:
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"Passage:\n{text}"}]

    def extract_with_model(self, text: str) -> list[Sentence] | None:
        """Request an extraction, retrying once on invalid output; None when both fail or the backbone raises."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                answer = self.generator.generate(self.messages(text), max_new_tokens=MAX_EXTRACTION_TOKENS)
            except Exception as error:  # a backbone error is never fatal, because this chunk uses the rules
                logger.warning("graph extraction by the generator failed; using the rule-based extractor",
                               extra={"backbone": getattr(self.generator, "name", "?"), "error": str(error)})
                return None
            try:
                return extraction_sentences(parse_extraction(answer))
            except ValueError as error:
                logger.info("graph extraction output invalid", extra={"attempt": attempt, "error": str(error)})
        return None

    def extract(self, text: str, *, known: Callable[[str], bool] | None = None) -> list[Sentence]:
        if not text.strip():
            return []
        sentences = self.extract_with_model(text)
        if sentences is None:
            self.failures += 1
            return self.fallback.extract(text, known=known)
        return sentences
