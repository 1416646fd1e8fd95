"""Entity name normalisation: every spelling variant of one name maps to the same key, so one entity is one node."""

import re
import unicodedata

# Dash and hyphen code points that NFKC leaves as they are; they all separate words the way "-" does.
_DASHES = re.compile("[\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d_-]")
_APOSTROPHES = re.compile("[\u2018\u2019\u02bc\u0060\u00b4]")
_POSSESSIVE = re.compile(r"'s\b")
_PUNCTUATION = re.compile(r"[^\w\s+]")
_LETTER_SPACE_DIGIT = re.compile(r"(?<=[^\W\d]) (?=\d)")
_LEADING_ARTICLE = re.compile(r"^(?:the|a|an) ")
# Endings that look plural but are not: "analysis", "virus", "class", "status".
_NOT_PLURAL = ("ss", "us", "is", "os")


def _singular(word: str) -> str:
    """Strip a regular English plural ending; irregular plurals and short words stay as they are."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(_NOT_PLURAL):
        return word[:-1]
    return word


def normalise_entity(name: str) -> str:
    """Return the matching key of an entity name, or "" when nothing is left of it.

    NFKC folds full-width and compatibility forms, case folding and accent stripping fold case and diacritics,
    hyphens and whitespace runs become one space, a letter-digit gap closes ("IL 10" and "IL-10" become "il10"),
    a leading article and a possessive "'s" go, and the last word loses a regular plural ending.
    """
    text = unicodedata.normalize("NFKC", name)
    text = _APOSTROPHES.sub("'", text).casefold()
    text = "".join(character for character in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(character))
    text = _POSSESSIVE.sub("", text)
    text = _DASHES.sub(" ", text)
    text = _PUNCTUATION.sub(" ", text)
    text = " ".join(text.split())
    text = _LETTER_SPACE_DIGIT.sub("", text)
    text = _LEADING_ARTICLE.sub("", text)
    if not text:
        return ""
    words = text.split(" ")
    words[-1] = _singular(words[-1])
    return " ".join(words)
