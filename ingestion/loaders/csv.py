"""CSV files: one document per row, or one per file, as the upload chooses.

The first row is the header. A column named `id` gives each row document its id, and a column named
`title` gives its title. Every other column becomes a `name: value` line of the text.
"""

import csv
import io

from ingestion.loaders.base import FormatError, ItemError, ParsedDocument, ParseOptions, Section, join_sections
from ingestion.normalize import decode

# csv's default field limit is 128 KiB; a spreadsheet cell with a long pasted text can exceed it.
csv.field_size_limit(16 * 1024 * 1024)


def load_csv(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument | ItemError]:
    text, encoding = decode(data)
    dialect = _sniff(text)
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), dialect))
    except csv.Error as error:
        raise FormatError(f"the CSV could not be parsed ({error})") from error
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    if len(rows) < 2:
        raise FormatError("the CSV has no data rows below its header; the first row must name the columns")

    header = [name.strip() or f"column {number}" for number, name in enumerate(rows[0], start=1)]
    lowered = [name.lower() for name in header]
    id_column = lowered.index("id") if "id" in lowered else None
    title_column = lowered.index("title") if "title" in lowered else None
    metadata = {"source": source, "encoding": encoding, "columns": header}

    if options.csv_mode == "file":
        sections = [Section(_row_text(header, row, skip={id_column, title_column}), {"row": number})
                    for number, row in enumerate(rows[1:], start=2)]
        return [ParsedDocument(text=join_sections(sections), sections=sections, metadata=metadata)]

    documents: list[ParsedDocument | ItemError] = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            documents.append(ItemError(f"{source}:{number}", f"row {number} has {len(row)} cells but the header "
                                                             f"has {len(header)} columns"))
            continue
        document_id = row[id_column].strip() if id_column is not None and id_column < len(row) else ""
        title = row[title_column].strip() if title_column is not None and title_column < len(row) else ""
        documents.append(ParsedDocument(
            text=_row_text(header, row, skip={id_column, title_column}), title=title,
            document_id=document_id or f"{source}#row{number}",
            metadata={**metadata, "row": number}))
    return documents


def _sniff(text: str) -> type[csv.Dialect] | csv.Dialect:
    try:
        return csv.Sniffer().sniff(text[:64 * 1024], delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def _row_text(header: list[str], row: list[str], *, skip: set[int | None]) -> str:
    return "\n".join(f"{header[index]}: {cell.strip()}" for index, cell in enumerate(row)
                     if index < len(header) and index not in skip and cell.strip())
