"""Plain text and Markdown files: one document each; Markdown keeps its heading path per section."""

import re

from ingestion.loaders.base import ParsedDocument, ParseOptions, Section, join_sections
from ingestion.normalize import decode

_MARKDOWN_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def load_text(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument]:
    text, encoding = decode(data)
    return [ParsedDocument(text=text, title="", metadata={"source": source, "encoding": encoding})]


def load_markdown(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument]:
    """Split at ATX headings (`#` to `######`) outside fenced code; each section records its heading path."""
    text, encoding = decode(data)
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence: str | None = None
    title = ""

    def close_section() -> None:
        if "".join(lines).strip():
            sections.append(Section("\n".join(lines), {"heading_path": [heading for _, heading in path]}))
        lines.clear()

    for line in text.splitlines():
        fence_match = _FENCE.match(line)
        if fence_match:
            if fence is None:
                fence = fence_match.group(1)
            elif fence_match.group(1) == fence:
                fence = None
        heading = _MARKDOWN_HEADING.match(line) if fence is None else None
        if heading:
            close_section()
            level, name = len(heading.group(1)), heading.group(2).strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, name))
            title = title or name
        lines.append(line)
    close_section()
    return [ParsedDocument(text=join_sections(sections), title=title, sections=sections,
                           metadata={"source": source, "encoding": encoding})]
