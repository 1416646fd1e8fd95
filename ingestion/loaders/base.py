"""What a loader produces: parsed documents, or per-item errors that do not fail the whole upload."""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ParsedDocument:
    text: str
    title: str = ""
    document_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemError:
    """A part of an upload that could not be read; `source` names the file and, where it applies, the line."""

    source: str
    message: str


class UnsupportedFormatError(ValueError):
    pass
