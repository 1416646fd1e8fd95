"""What a loader produces: parsed documents, or per-item errors that do not fail the whole upload."""

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class Section:
    """A structural part of a document, such as a page or the text under a heading, with its own metadata.

    The metadata of every section that a chunk overlaps is merged into the chunk's metadata: `page` values
    become the chunk's `pages`, and the chunk takes the `heading_path` of the section it starts in.
    """

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedDocument:
    text: str
    title: str = ""
    document_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Empty for formats without structure; otherwise `text` is the sections' texts joined by blank lines.
    sections: list[Section] = field(default_factory=list)


@dataclass(frozen=True)
class ItemError:
    """A part of an upload that could not be read; `source` names the file and, where it applies, the line."""

    source: str
    message: str


@dataclass(frozen=True)
class ParseOptions:
    """Per-upload choices and limits that loaders apply."""

    csv_mode: Literal["row", "file"] = "row"
    max_pdf_pages: int = 2000


class UnsupportedFormatError(ValueError):
    pass


class LimitExceededError(ValueError):
    """A file exceeds a configured limit; the message names the setting."""


class FormatError(ValueError):
    """A file of a supported type that cannot be read: damaged, encrypted or without extractable text."""


def join_sections(sections: list[Section]) -> str:
    return "\n\n".join(section.text for section in sections)
