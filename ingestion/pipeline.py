"""Parse -> normalise -> chunk: turns an uploaded item into documents ready to embed."""

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from ingestion.chunking import Chunk, TokenOffsets, chunk_text
from ingestion.loaders.base import (FormatError, ItemError, LimitExceededError, ParsedDocument, ParseOptions,
                                    Section, UnsupportedFormatError)
from ingestion.loaders.csv import load_csv
from ingestion.loaders.docx import load_docx
from ingestion.loaders.html import load_html
from ingestion.loaders.ndjson import iter_ndjson
from ingestion.loaders.pdf import load_pdf
from ingestion.loaders.text import load_markdown, load_text
from ingestion.normalize import DecodingError, normalize_text

logger = logging.getLogger(__name__)

LOADERS = {
    ".txt": load_text,
    ".text": load_text,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".html": load_html,
    ".htm": load_html,
    ".csv": load_csv,
}
NDJSON_SUFFIXES = {".ndjson", ".jsonl"}
SUPPORTED_SUFFIXES = sorted([*LOADERS, *NDJSON_SUFFIXES])
SECTION_SEPARATOR = "\n\n"


@dataclass
class PreparedDocument:
    document_id: str
    title: str
    text: str
    metadata: dict
    source: str
    content_hash: str
    chunks: list[Chunk]
    chunk_metadata: list[dict]


def parse_item(data: bytes, *, source: str, kind: str,
               options: ParseOptions | None = None) -> Iterator[ParsedDocument | ItemError]:
    """Yield the documents of one uploaded item, or per-item errors; `kind` is 'ndjson' or 'file'.

    Every failure to read the item becomes an ItemError, so one bad file never fails the whole job.
    """
    options = options or ParseOptions()
    suffix = PurePath(source).suffix.lower()
    try:
        if kind == "ndjson" or suffix in NDJSON_SUFFIXES:
            yield from iter_ndjson(data, source=source)
            return
        loader = LOADERS.get(suffix)
        if loader is None:
            raise UnsupportedFormatError(
                f"unsupported file type {suffix or '(no extension)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}"
            )
        for document in loader(data, source=source, options=options):
            if isinstance(document, ParsedDocument):
                # A file's identity is its label unless the loader found an explicit id.
                document.document_id = document.document_id or source
            yield document
    except (UnsupportedFormatError, DecodingError, FormatError, LimitExceededError) as error:
        yield ItemError(source, str(error))
    except Exception as error:  # a parser library's bug on a malformed file must not stop the job
        logger.warning("parser failed on an upload", extra={"source": source, "error": repr(error)})
        yield ItemError(source, f"the file could not be parsed ({type(error).__name__}: {error})")


def content_hash(document: ParsedDocument, *, chunk_size: int, chunk_overlap: int) -> str:
    """Hash what decides a document's chunks, so identical re-uploads are recognised as unchanged."""
    sections = [[section.text, section.metadata] for section in document.sections]
    payload = json.dumps([document.title, document.text, document.metadata, sections, chunk_size, chunk_overlap],
                         sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def prepare(document: ParsedDocument, *, source: str, chunk_size: int, chunk_overlap: int,
            token_offsets: TokenOffsets) -> PreparedDocument:
    """Normalise a parsed document and chunk it, giving each chunk the metadata of its sections."""
    sections = [Section(normalize_text(section.text), section.metadata) for section in document.sections]
    sections = [section for section in sections if section.text] or [Section(normalize_text(document.text))]
    starts, position = [], 0
    for section in sections:
        starts.append(position)
        position += len(section.text) + len(SECTION_SEPARATOR)
    text = SECTION_SEPARATOR.join(section.text for section in sections)

    chunks = chunk_text(text, size=chunk_size, overlap=chunk_overlap, token_offsets=token_offsets,
                        section_starts=starts[1:])
    return PreparedDocument(
        document_id=document.document_id or source,
        title=normalize_text(document.title),
        text=text,
        metadata=document.metadata,
        source=source,
        content_hash=content_hash(document, chunk_size=chunk_size, chunk_overlap=chunk_overlap),
        chunks=chunks,
        chunk_metadata=[_chunk_metadata(chunk, sections, starts) for chunk in chunks],
    )


def _chunk_metadata(chunk: Chunk, sections: list[Section], starts: list[int]) -> dict:
    """Merge the metadata of the sections a chunk overlaps: its pages, rows and the heading path it starts under."""
    metadata: dict = {"start": chunk.start, "end": chunk.end, "tokens": chunk.tokens}
    pages, rows = [], []
    for section, start in zip(sections, starts):
        end = start + len(section.text)
        if start >= chunk.end or end <= chunk.start:
            continue
        if "page" in section.metadata:
            pages.append(section.metadata["page"])
        if "row" in section.metadata:
            rows.append(section.metadata["row"])
        if "heading_path" in section.metadata and "heading_path" not in metadata:
            metadata["heading_path"] = section.metadata["heading_path"]
    if pages:
        metadata["pages"] = pages
    if rows:
        metadata["rows"] = rows
    return metadata
