"""PDF files: the text layer of each page, one section per page so chunks know their page numbers."""

import io
import logging

from pypdf import PdfReader
from pypdf.errors import PdfReadError

from ingestion.loaders.base import FormatError, LimitExceededError, ParsedDocument, ParseOptions, Section, join_sections

# pypdf logs a warning for every malformed object it repairs; a bulk upload of old PDFs would flood the log.
logging.getLogger("pypdf").setLevel(logging.ERROR)


def load_pdf(data: bytes, *, source: str, options: ParseOptions) -> list[ParsedDocument]:
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not _open_without_password(reader):
            raise FormatError("the PDF is password-protected; upload an unencrypted copy")
        page_count = len(reader.pages)
    except PdfReadError as error:
        raise FormatError(f"the PDF could not be read ({error}); the file may be damaged") from error
    if page_count > options.max_pdf_pages:
        raise LimitExceededError(f"the PDF has {page_count} pages, over the limit of {options.max_pdf_pages} "
                                 "(DOMAINRAG_MAX_PDF_PAGES); split it or raise the limit")

    sections = []
    for number, page in enumerate(reader.pages, start=1):
        try:
            text = page.extract_text() or ""
        except (PdfReadError, ValueError, KeyError) as error:
            raise FormatError(f"page {number} of the PDF could not be read ({error})") from error
        if text.strip():
            sections.append(Section(text, {"page": number}))
    if not sections:
        raise FormatError(f"the PDF has no text layer on any of its {page_count} pages (scanned or image-only); "
                          "run OCR on it before uploading")

    metadata = {"source": source, "page_count": page_count}
    title = _title(reader)
    return [ParsedDocument(text=join_sections(sections), title=title, sections=sections, metadata=metadata)]


def _open_without_password(reader: PdfReader) -> bool:
    """Open PDFs encrypted with an empty user password, which viewers open without asking."""
    try:
        return bool(reader.decrypt(""))
    except (PdfReadError, NotImplementedError):
        return False


def _title(reader: PdfReader) -> str:
    try:
        info = reader.metadata
    except PdfReadError:
        return ""
    title = info.title if info is not None else None
    return title.strip() if isinstance(title, str) else ""
