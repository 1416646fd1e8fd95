"""Plain text and Markdown files: one document each."""

import re

from ingestion.loaders.base import ParsedDocument
from ingestion.normalize import decode

_MARKDOWN_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def load_text(data: bytes, *, source: str) -> list[ParsedDocument]:
    text, encoding = decode(data)
    return [ParsedDocument(text=text, title="", metadata={"source": source, "encoding": encoding})]


def load_markdown(data: bytes, *, source: str) -> list[ParsedDocument]:
    text, encoding = decode(data)
    heading = _MARKDOWN_HEADING.search(text)
    title = heading.group(1).strip() if heading else ""
    return [ParsedDocument(text=text, title=title, metadata={"source": source, "encoding": encoding})]
