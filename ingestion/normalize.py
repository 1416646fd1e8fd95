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


class DecodingError(ValueError):
    pass


def decode(data: bytes) -> tuple[str, str]:
    """Decode bytes by byte-order mark, then strict UTF-8, then detection; never by the server's locale.

    Returns the text and the encoding used. Raises DecodingError rather than dropping bytes.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(encoding), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best = from_bytes(data).best()
    if best is None or best.encoding is None:
        raise DecodingError("could not detect the text encoding; convert the file to UTF-8 and upload it again")
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
