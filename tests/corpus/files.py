"""The ingestion test corpus: every supported format and each bad case, with its expected outcome.

Each supported file contains one made-up word found in no other file, so a BM25 query for that word must
return exactly that file's document.
"""

import codecs
import json
import random
from dataclasses import dataclass

from tests.corpus.builders import make_docx, make_pdf


@dataclass(frozen=True)
class CorpusFile:
    name: str
    # None for an entry that is not a file of its own but a document or a line inside another file.
    data: bytes | None
    # The document id the file is stored under, or None when the file must fail.
    document_id: str | None = None
    # A word unique to this file, which a BM25 query must find.
    word: str | None = None
    # A part of the per-file error message, for files that must fail.
    error: str | None = None
    # A word that must never be retrievable, such as one inside a <script> element.
    hidden_word: str | None = None


def _ok(name, data, word, document_id=None, hidden_word=None):
    return CorpusFile(name, data, document_id or name, word, hidden_word=hidden_word)


def _fails(name, data, error):
    return CorpusFile(name, data, None, None, error)


def build_corpus() -> list[CorpusFile]:
    rng = random.Random(7)
    long_line = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(200_000))
    sentence = "The {} measurement was recorded in the field notebook on Tuesday."
    files = [
        _ok("plain.txt", sentence.format("zorbulite").encode(), "zorbulite"),
        _ok("bom.txt", codecs.BOM_UTF8 + sentence.format("quindlefax").encode(), "quindlefax"),
        _ok("legacy-cp1252.txt", "Le café coûte 5 € – « très » cher: vrompelage.".encode("cp1252"), "vrompelage"),
        _ok("utf16-bom.txt", codecs.BOM_UTF16_LE + sentence.format("glimmerwort").encode("utf-16-le"),
            "glimmerwort"),
        _ok("utf16le-nobom.txt", sentence.format("trandolith").encode("utf-16-le"), "trandolith"),
        _ok("utf16be-nobom.txt", sentence.format("plaxomere").encode("utf-16-be"), "plaxomere"),
        _ok("nul-bytes.txt", sentence.format("snorvelite\x00").encode() + b"\x00 more text follows here.",
            "snorvelite"),
        _ok("controls.txt", ("Bell\x07 and escape\x1b chars around frumbazzle, then a form feed\x0c. " * 3).encode(),
            "frumbazzle"),
        _ok("long-line.txt", (long_line + "\n\nAfter the long line comes wexplinder.").encode(), "wexplinder"),
        _ok("crlf.txt", "Line one\r\nline two mentions drabnostic\r\n\r\nlast".encode(), "drabnostic"),
        _ok("decomposed.txt", "Cafe\u0301 owners like yelmquist.".encode(), "yelmquist"),
        _ok("notes.md", b"# Field guide\n\nIntro.\n\n## Birds\n\nThe krestavel nests in reeds.\n", "krestavel"),
        _ok("old.markdown", b"Title line\n==========\n\nBody with plimsoneer.\n", "plimsoneer"),
        _ok("page.html", b"<html><head><title>Tides</title><script>var scriptonlyword=1;</script></head><body>"
                         b"<nav>navonlyword</nav><main><h1>Tides</h1><p>The moon pulls the oceloquent water."
                         b"</p></main><footer>footeronlyword</footer></body></html>", "oceloquent",
            hidden_word="scriptonlyword"),
        _ok("article.htm", "<article><h2>Séance</h2><p>Strange brumwhistle noises.</p></article>".encode(),
            "brumwhistle"),
        _ok("report.pdf", make_pdf([["Quarterly report, page one."], ["Page two names the glorpham variant."]]),
            "glorpham"),
        _ok("memo.docx", make_docx([("Heading 1", "Memo"), ("Normal", "Please file the trevolant forms.")]),
            "trevolant"),
        _ok("table.docx", make_docx([("Normal", "Inventory")], table=[["item", "count"], ["zandrocket", "4"]]),
            "zandrocket"),
        _ok("whole.csv", b"name,notes\nA,first spindlewick row\nB,second row\n", "spindlewick",
            document_id="whole.csv#row2"),
        _ok("tabbed.csv", b"code\tlabel\nx1\tthe hobnarvel code\n", "hobnarvel", document_id="tabbed.csv#row2"),
        _ok("same-content-a.txt", sentence.format("duplexian").encode(), "duplexian"),
        _ok("same-content-b.txt", sentence.format("duplexian").encode(), "duplexian"),
        _ok("../escape-attempt.txt", sentence.format("pathfrobble").encode(), "pathfrobble",
            document_id="escape-attempt.txt"),
        _ok("nested/dir/inner.txt", sentence.format("innermoxie").encode(), "innermoxie"),
        _ok("tabs-and-spaces.txt", b"Column\t\tlayout   with   gaps   and   sprockelton.\n\n\n\n\nEnd.", "sprockelton"),
        _ok("latin.md", "# Über\n\nDie grölzmann Straße.".encode("cp1252"), "grölzmann"),
        _ok("UPPER.TXT", sentence.format("capsulorn").encode(), "capsulorn"),
        _ok("multi-page.pdf", make_pdf([[f"Page {n} line about topic {n}."] for n in range(1, 5)]
                                       + [["The last page mentions bindlethorpe."]]), "bindlethorpe"),
        _fails("empty.txt", b"", "document has no text after normalisation"),
        _fails("whitespace.txt", b"  \n\t\r\n   \n", "document has no text after normalisation"),
        _fails("scan.pdf", make_pdf([[], []]), "no text layer"),
        _fails("too-long.pdf", make_pdf([["short page"]] * 6), "DOMAINRAG_MAX_PDF_PAGES"),
        _fails("broken.pdf", b"%PDF-1.4\n1 0 obj garbage without structure", "PDF"),
        _fails("broken.docx", b"PK\x03\x04 not really a zip archive", "not a readable .docx"),
        _fails("photo.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(rng.randrange(256) for _ in range(2000)),
               "binary"),
        _fails("random.txt", bytes(rng.randrange(32) for _ in range(4000)), "binary"),
        _fails("image.png", b"\x89PNG\r\n\x1a\n", "unsupported file type '.png'"),
        _fails("archive.zip", b"PK\x05\x06" + b"\x00" * 18, "unsupported file type '.zip'"),
        _fails("Makefile", b"all:\n\techo hi\n", "unsupported file type '(no extension)'"),
        _fails("scripts-only.html", b"<html><body><script>nothing()</script></body></html>",
               "document has no text after normalisation"),
        _fails("empty.md", b"\n\n", "document has no text after normalisation"),
        _fails("header-only.csv", b"id,text\n", "no data rows"),
    ]
    ndjson = "\n".join(json.dumps(record) for record in [
        {"id": "nd-1", "title": "First", "text": "The ploverine record."},
        {"id": "nd-2", "text": "The smarkwood record."},
    ]).encode()
    files.append(_ok("records.ndjson", ndjson, "ploverine", document_id="nd-1"))
    files.append(CorpusFile("records.ndjson#2", None, "nd-2", "smarkwood"))
    files.append(_ok("mixed.jsonl", b'{"id": "jl-1", "text": "A quibbleton line."}\nnot json\n', "quibbleton",
                     document_id="jl-1"))
    files.append(_fails("mixed.jsonl:2", None, "line 2 is not valid JSON"))
    return files
