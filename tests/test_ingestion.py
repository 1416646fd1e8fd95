"""Decoding, the format loaders and parse isolation, tested below the HTTP layer."""

import codecs
import time

import pytest

from ingestion.isolation import IsolatedParser
from ingestion.loaders.base import ItemError, ParsedDocument, ParseOptions
from ingestion.normalize import DecodingError, decode, normalize_text
from ingestion.pipeline import parse_item, prepare
from app.routes.documents import file_label
from tests.corpus.builders import make_docx, make_pdf
from tests.corpus.slow_parse import sleep_then_parse
from tests.fakes import FakeEmbedder


def parse_one(data: bytes, source: str, **options) -> ParsedDocument | ItemError:
    results = list(parse_item(data, source=source, kind="file", options=ParseOptions(**options)))
    assert len(results) == 1, results
    return results[0]


def prepared(document: ParsedDocument, size: int = 64, overlap: int = 8):
    return prepare(document, source="test", chunk_size=size, chunk_overlap=overlap,
                   token_offsets=FakeEmbedder().token_offsets)


class TestDecode:
    TEXT = "Résumé of the naïve café: “quoted” costs €5 — really."

    @pytest.mark.parametrize("encoding, prefix", [
        ("utf-8", b""), ("utf-8", codecs.BOM_UTF8), ("utf-16-le", codecs.BOM_UTF16_LE),
        ("utf-16-be", codecs.BOM_UTF16_BE), ("utf-16-le", b""), ("utf-16-be", b""), ("cp1252", b""),
    ])
    def test_encodings_round_trip(self, encoding, prefix):
        text, detected = decode(prefix + self.TEXT.encode(encoding))
        assert text == self.TEXT
        assert detected == encoding

    def test_central_european_stays_cp1250(self):
        text = "Příliš žluťoučký kůň úpěl ďábelské ódy. Šťastný ježek."
        assert decode(text.encode("cp1250")) == (text, "cp1250")

    def test_png_renamed_to_txt_is_rejected(self):
        with pytest.raises(DecodingError, match="binary"):
            decode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)

    def test_control_heavy_bytes_are_rejected(self):
        with pytest.raises(DecodingError, match="control bytes"):
            decode(bytes([1, 2, 3, 4, 200, 201, 17, 18]) * 100)

    def test_nul_bytes_in_utf8_are_stripped(self):
        text, _ = decode(b"alpha\x00beta gamma, a sentence long enough to be text.\x00")
        assert normalize_text(text) == "alphabeta gamma, a sentence long enough to be text."

    def test_normalize_nfc_controls_and_layout(self):
        raw = "Cafe\u0301\x07  with\t\ttabs\r\n\r\n\r\n\r\nnext\u00a0para\x0c"
        assert normalize_text(raw) == "Café with tabs\n\nnext para"


class TestFileLabel:
    @pytest.mark.parametrize("name, label", [
        ("../../etc/passwd.txt", "etc/passwd.txt"), ("..\\windows\\x.md", "windows/x.md"),
        ("/abs/path.txt", "abs/path.txt"), ("a/./b/../c.txt", "a/b/c.txt"), ("", "upload"), ("..", "upload"),
        ("bad\x00name.txt", "badname.txt"),
    ])
    def test_label_has_no_path_traversal(self, name, label):
        assert file_label(name) == label


class TestMarkdown:
    def test_heading_path_in_chunk_metadata(self):
        data = ("# Guide\nIntro text.\n\n## Install\nRun pip.\n\n```\n# not a heading\n```\n\n"
                "### Linux\nUse apt.\n\n## Usage\nCall it.\n").encode()
        document = parse_one(data, "guide.md")
        assert document.title == "Guide"
        paths = [section.metadata["heading_path"] for section in document.sections]
        assert paths == [["Guide"], ["Guide", "Install"], ["Guide", "Install", "Linux"], ["Guide", "Usage"]]
        result = prepared(document)
        by_text = {metadata["heading_path"][-1]: chunk.text for chunk, metadata in
                   zip(result.chunks, result.chunk_metadata)}
        assert "Use apt." in by_text["Linux"]
        assert "# not a heading" in by_text["Install"]


class TestPdf:
    def test_page_numbers_in_chunk_metadata(self):
        data = make_pdf([["First page talks about zebrafish."], ["Second page talks about quokkas."]],
                        title="Field notes")
        result = prepared(parse_one(data, "notes.pdf"))
        assert result.title == "Field notes"
        pages = {chunk.text.split()[-1]: metadata["pages"] for chunk, metadata in
                 zip(result.chunks, result.chunk_metadata)}
        assert pages == {"zebrafish.": [1], "quokkas.": [2]}

    def test_image_only_pdf_is_an_error(self):
        error = parse_one(make_pdf([[], []]), "scan.pdf")
        assert error == ItemError("scan.pdf", "the PDF has no text layer on any of its 2 pages (scanned or "
                                              "image-only); run OCR on it before uploading")

    def test_page_limit_names_the_setting(self):
        error = parse_one(make_pdf([["page"]] * 4), "long.pdf", max_pdf_pages=3)
        assert isinstance(error, ItemError)
        assert error.message == ("the PDF has 4 pages, over the limit of 3 (DOMAINRAG_MAX_PDF_PAGES); "
                                 "split it or raise the limit")

    def test_garbage_pdf_is_an_error(self):
        error = parse_one(b"%PDF-1.4 this is not really a pdf", "broken.pdf")
        assert isinstance(error, ItemError)
        assert "PDF" in error.message or "could not be parsed" in error.message


class TestDocx:
    def test_headings_and_tables_kept(self):
        data = make_docx([("Title", "Lab manual"), ("Heading 1", "Safety"), ("Normal", "Wear goggles."),
                          ("Heading 2", "Spills"), ("Normal", "Use the kit.")],
                         table=[["Agent", "Dose"], ["Saline", "5 ml"]])
        document = parse_one(data, "manual.docx")
        assert document.title == "Lab manual"
        assert [section.metadata["heading_path"] for section in document.sections] == [
            ["Lab manual"], ["Lab manual", "Safety"], ["Lab manual", "Safety", "Spills"]]
        assert "Saline | 5 ml" in document.text

    def test_not_a_zip_is_an_error(self):
        error = parse_one(b"plain text pretending", "fake.docx")
        assert isinstance(error, ItemError)
        assert error.message.startswith("the file is not a readable .docx document")


class TestHtml:
    PAGE = b"""<!doctype html><html><head><title>Tide tables</title><style>.x{color:red}</style>
    <script>var secretscript = 1;</script></head><body>
    <nav><a href="/">Home</a> navlinkword</nav><div class="cookie-banner">cookieword accept</div>
    <main><h1>Tides</h1><p>High tide at <b>noon</b>.</p><!-- commentword -->
    <h2>Spring</h2><ul><li>One</li><li>Two</li></ul><script>inlinescriptword()</script></main>
    <footer>footerword</footer></body></html>"""

    def test_main_text_without_boilerplate(self):
        document = parse_one(self.PAGE, "tides.html")
        assert document.title == "Tide tables"
        normalized = normalize_text(document.text)
        assert "High tide at noon." in normalized
        for word in ("secretscript", "navlinkword", "cookieword", "commentword", "inlinescriptword", "footerword",
                     "color"):
            assert word not in normalized
        assert [section.metadata["heading_path"] for section in document.sections] == [["Tides"], ["Tides", "Spring"]]

    def test_wrapper_with_sidebar_class_kept(self):
        page = (b'<html><body><div class="layout has-sidebar"><aside>asideword</aside>'
                b'<article><h1>Heading</h1><p>Kept body text.</p></article></div></body></html>')
        text = normalize_text(parse_one(page, "wrapped.html").text)
        assert text == "Heading\n\nKept body text."


class TestCsv:
    DATA = b"id,title,body,year\nr1,First,alpha text,2020\nr2,Second,beta text,2021\n,Third,gamma text,\n"

    def test_row_mode_gives_one_document_per_row(self):
        documents = list(parse_item(self.DATA, source="table.csv", kind="file", options=ParseOptions()))
        assert [document.document_id for document in documents] == ["r1", "r2", "table.csv#row4"]
        assert documents[0].title == "First"
        assert documents[0].text == "body: alpha text\nyear: 2020"

    def test_file_mode_gives_one_document(self):
        document = parse_one(self.DATA, "table.csv", csv_mode="file")
        assert document.document_id == "table.csv"
        assert document.text == "body: alpha text\nyear: 2020\n\nbody: beta text\nyear: 2021\n\nbody: gamma text"
        result = prepared(document, size=5, overlap=1)
        assert [metadata["rows"] for metadata in result.chunk_metadata] == [[2], [3], [4]]

    def test_semicolon_delimiter_detected(self):
        documents = list(parse_item(b"name;note\nx;first row\ny;second row\n", source="semi.csv", kind="file"))
        assert [document.text for document in documents] == ["name: x\nnote: first row", "name: y\nnote: second row"]

    def test_header_only_is_an_error(self):
        error = parse_one(b"id,text\n", "header.csv")
        assert error == ItemError("header.csv", "the CSV has no data rows below its header; the first row must "
                                                "name the columns")


class TestParseTimeout:
    def test_slow_file_times_out(self):
        parser = IsolatedParser(3.0, parse=sleep_then_parse)
        try:
            started = time.perf_counter()
            result = parser.parse(b"slow", source="slow.txt", kind="file", options=ParseOptions())
            assert time.perf_counter() - started < 20
            assert result == [ItemError("slow.txt", "parsing took longer than the limit of 3 s "
                                                    "(DOMAINRAG_PARSE_TIMEOUT_S); the file may be malformed, or "
                                                    "raise the limit")]
            after = parser.parse(b"fast", source="fast.txt", kind="file", options=ParseOptions())
            assert after == [ParsedDocument(text="fast", document_id="fast.txt")]
        finally:
            parser.close()
