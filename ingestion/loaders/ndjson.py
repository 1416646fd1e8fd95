"""NDJSON: one JSON document a line, `{"id" or "_id", "title", "text", "metadata"}`."""

import json
from collections.abc import Iterator

from ingestion.loaders.base import ItemError, ParsedDocument
from ingestion.normalize import decode


def iter_ndjson(data: bytes, *, source: str) -> Iterator[ParsedDocument | ItemError]:
    """Yield a document per valid line and an error naming the line number for each invalid one."""
    text, _ = decode(data)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield ItemError(where, f"line {number} is not valid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            yield ItemError(where, f"line {number} must be a JSON object, got {type(record).__name__}")
            continue
        document_id = record.get("id", record.get("_id"))
        if document_id is None or (isinstance(document_id, str) and not document_id.strip()):
            yield ItemError(where, f'line {number} has no "id" (or "_id"); give every document a unique id')
            continue
        if not isinstance(document_id, (str, int)) or isinstance(document_id, bool):
            yield ItemError(where, f'line {number}: "id" must be a string or an integer')
            continue
        body = record.get("text")
        if not isinstance(body, str) or not body.strip():
            yield ItemError(where, f'line {number}: "text" must be a non-empty string')
            continue
        title = record.get("title") or ""
        if not isinstance(title, str):
            yield ItemError(where, f'line {number}: "title" must be a string')
            continue
        metadata = record.get("metadata") or {}
        if not isinstance(metadata, dict):
            yield ItemError(where, f'line {number}: "metadata" must be a JSON object')
            continue
        yield ParsedDocument(text=body, title=title, document_id=str(document_id), metadata=metadata)
