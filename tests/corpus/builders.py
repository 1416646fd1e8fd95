"""Builders for test files in binary formats, generated at test time so that no binary is committed."""

import io
import zlib

from docx import Document


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def make_pdf(pages: list[list[str]], *, title: str | None = None) -> bytes:
    """Build a PDF with one page per entry, each line drawn as Helvetica text; an empty page has no text.

    An empty list of lines draws a small grey image instead, like a scanned page without a text layer.
    """
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")
    pages_object = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for lines in pages:
        if lines:
            commands = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
            for line in lines:
                commands.append(f"{_pdf_string(line)} Tj T*")
            commands.append("ET")
            stream = "\n".join(commands).encode("latin-1")
        else:
            pixels = bytes([128] * 64)
            stream = (b"q 200 0 0 200 72 400 cm BI /W 8 /H 8 /CS /G /BPC 8 ID " + pixels + b" EI Q")
        compressed = zlib.compress(stream)
        content = add(b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(compressed) + compressed
                      + b"\nendstream")
        page_ids.append(add(b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                            b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                            % (pages_object, font, content)))
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_object
    kids = b" ".join(b"%d 0 R" % page for page in page_ids)
    objects[pages_object - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    info = add(b"<< /Title %s >>" % _pdf_string(title).encode("latin-1")) if title else None

    output = io.BytesIO()
    output.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(output.tell())
        output.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = output.tell()
    output.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        output.write(b"%010d 00000 n \n" % offset)
    trailer = b"<< /Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    output.write(b"trailer\n" + trailer + b" >>\nstartxref\n%d\n%%%%EOF\n" % xref)
    return output.getvalue()


def make_docx(blocks: list[tuple[str, str]], *, table: list[list[str]] | None = None) -> bytes:
    """Build a .docx from (style, text) pairs; style is 'Title', 'Heading N' or 'Normal'."""
    document = Document()
    for style, text in blocks:
        if style == "Title":
            document.add_heading(text, level=0)
        elif style.startswith("Heading "):
            document.add_heading(text, level=int(style.split()[1]))
        else:
            document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=len(table[0]))
        for row, cells in zip(grid.rows, table):
            for cell, value in zip(row.cells, cells):
                cell.text = value
    output = io.BytesIO()
    document.save(output)
    return output.getvalue()
