"""Decoding and normalisation of uploaded text."""

import codecs
import re
import unicodedata

from charset_normalizer import from_bytes

# C0 and C1 control characters except tab, line feed and carriage return, which carry layout.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")

_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
]
# Bytes that text in a single-byte code page almost never contains: C0 controls other than tab, line feed,
# form feed and carriage return.
_BINARY_BYTES = bytes(set(range(32)) - {9, 10, 12, 13})
# Share of such bytes above which an upload is treated as binary rather than text with stray controls.
MAX_BINARY_SHARE = 0.05
# How much of a file the binary and UTF-16 checks look at; enough to judge, cheap on a large upload.
SAMPLE_BYTES = 64 * 1024
# Leading bytes of common binary formats that are sometimes renamed to .txt.
_BINARY_SIGNATURES = (b"%PDF-", b"PK\x03\x04", b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"\x7fELF",
                      b"\x1f\x8b", b"\xd0\xcf\x11\xe0")


class DecodingError(ValueError):
    pass


def decode(data: bytes) -> tuple[str, str]:
    """Decode bytes by byte-order mark, UTF-16 layout, strict UTF-8, then detection; never by the locale.

    Returns the text and the encoding used. Raises DecodingError for binary data rather than dropping bytes.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return _strict(data[len(bom):], encoding), encoding
    utf16 = _utf16_without_bom(data)
    if utf16 is not None:
        return utf16
    _reject_binary(data)
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return _detect(data)


def _strict(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        raise DecodingError(f"invalid {encoding} at byte {error.start}; the file is damaged or not text") from error


def _utf16_without_bom(data: bytes) -> tuple[str, str] | None:
    """Recognise UTF-16 without a byte-order mark by the zero high bytes that Latin-script text has."""
    sample = data[:SAMPLE_BYTES]
    if len(sample) < 4 or len(data) % 2:
        return None
    even_zeros = sample[0::2].count(0) / (len(sample) // 2)
    odd_zeros = sample[1::2].count(0) / (len(sample) // 2)
    if odd_zeros > 0.3 and even_zeros < 0.05:
        encoding = "utf-16-le"
    elif even_zeros > 0.3 and odd_zeros < 0.05:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError:
        return None


def _reject_binary(data: bytes) -> None:
    if data.startswith(_BINARY_SIGNATURES):
        raise DecodingError("the file is binary (its first bytes match a known binary format), not text; "
                            "upload it with its real file extension")
    sample = data[:SAMPLE_BYTES]
    if not sample:
        return
    share = sum(sample.count(byte) for byte in _BINARY_BYTES) / len(sample)
    if share > MAX_BINARY_SHARE:
        raise DecodingError(f"the file is binary, not text: {share:.0%} of its first bytes are control bytes")


def _detect(data: bytes) -> tuple[str, str]:
    matches = from_bytes(data)
    best = matches.best()
    if best is None or best.encoding is None:
        raise DecodingError("could not detect the text encoding; convert the file to UTF-8 and upload it again")
    # charset-normalizer ranks cp1250 and cp1252 equal on Western text and then picks cp1250, which turns
    # "€" and "–" into other letters. Legacy Western files are far more common, so cp1252 wins a tie.
    for match in matches:
        if match.encoding == "cp1252" and match.chaos <= best.chaos and match.coherence >= best.coherence:
            return str(match), "cp1252"
    return str(best), best.encoding


def normalize_text(text: str) -> str:
    """NFC-normalise, drop control characters, unify line breaks and collapse layout whitespace."""
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()
