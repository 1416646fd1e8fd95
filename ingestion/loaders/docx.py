"""Word (.docx) files: paragraphs and tables in document order, split into sections at headings."""

import io
import re
import zipfile

from docx import Document as open_docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph

from ingestion.loaders.base import FormatError, ParsedDocument, ParseOptions, Section, join_sections

# Word's built-in heading styles are named "Heading 1" to "Heading 9"; "Title" is the document title.
_HEADING_STYLE = re.compile(r"^Heading (\d)$")


def load_docx(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument]:
    try:
        document = open_docx(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as error:
        raise FormatError(f"the file is not a readable .docx document ({error})") from error

    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    title = (document.core_properties.title or "").strip()

    def close_section() -> None:
        if "".join(lines).strip():
            sections.append(Section("\n\n".join(lines), {"heading_path": [heading for _, heading in path]}))
        lines.clear()

    for block in document.iter_inner_content():
        if isinstance(block, Table):
            lines.append(_table_text(block))
            continue
        text = block.text.strip()
        if not text:
            continue
        level = _heading_level(block)
        if level is not None:
            close_section()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, text))
            title = title or text
        lines.append(text)
    close_section()
    return [ParsedDocument(text=join_sections(sections), title=title, sections=sections,
                           metadata={"source": source})]


def _heading_level(paragraph: Paragraph) -> int | None:
    name = paragraph.style.name if paragraph.style is not None else ""
    if name == "Title":
        return 0
    match = _HEADING_STYLE.match(name or "")
    return int(match.group(1)) if match else None


def _table_text(table: Table) -> str:
    """Write each row as one line of cells joined by ' | ', so a row stays together in one paragraph."""
    rows = []
    for row in table.rows:
        cells = [cell.text.strip() for cell in row.cells]
        if any(cells):
            rows.append(" | ".join(cells))
    return "\n".join(rows)
