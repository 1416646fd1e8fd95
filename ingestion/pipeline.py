"""Parse -> normalise -> chunk: turns an uploaded item into documents ready to embed."""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from ingestion.chunking import Chunk, TokenOffsets, chunk_text
from ingestion.loaders.base import ItemError, ParsedDocument, UnsupportedFormatError
from ingestion.loaders.ndjson import iter_ndjson
from ingestion.loaders.text import load_markdown, load_text
from ingestion.normalize import DecodingError, normalize_text

LOADERS = {
    ".txt": load_text,
    ".text": load_text,
    ".md": load_markdown,
    ".markdown": load_markdown,
}
NDJSON_SUFFIXES = {".ndjson", ".jsonl"}
SUPPORTED_SUFFIXES = sorted([*LOADERS, *NDJSON_SUFFIXES])


@dataclass
class PreparedDocument:
    document_id: str
    title: str
    text: str
    metadata: dict
    source: str
    content_hash: str
    chunks: list[Chunk]


def parse_item(data: bytes, *, source: str, kind: str) -> Iterator[ParsedDocument | ItemError]:
    """Yield the documents of one uploaded item, or per-item errors; `kind` is 'ndjson' or 'file'."""
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
        for document in loader(data, source=source):
            # A file's identity is its name unless the loader found an explicit id.
            document.document_id = document.document_id or PurePath(source).name
            yield document
    except (UnsupportedFormatError, DecodingError) as error:
        yield ItemError(source, str(error))


def content_hash(document: ParsedDocument, *, chunk_size: int, chunk_overlap: int) -> str:
    """Hash what decides a document's chunks, so identical re-uploads are recognised as unchanged."""
    payload = json.dumps([document.title, document.text, document.metadata, chunk_size, chunk_overlap],
                         sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def prepare(document: ParsedDocument, *, source: str, chunk_size: int, chunk_overlap: int,
            token_offsets: TokenOffsets) -> PreparedDocument:
    text = normalize_text(document.text)
    title = normalize_text(document.title)
    return PreparedDocument(
        document_id=document.document_id or source,
        title=title,
        text=text,
        metadata=document.metadata,
        source=source,
        content_hash=content_hash(document, chunk_size=chunk_size, chunk_overlap=chunk_overlap),
        chunks=chunk_text(text, size=chunk_size, overlap=chunk_overlap, token_offsets=token_offsets),
    )
