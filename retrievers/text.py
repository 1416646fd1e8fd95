"""Analysis for lexical retrieval: Unicode word tokens, lower-cased, English stop words removed, Snowball-stemmed."""

import re

import Stemmer

# The Snowball project's English stop word list, trimmed to function words; content words such as "high" stay.
ENGLISH_STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs
them themselves then there these they this those through to too under until up very was we were what when
where which while who whom why will with would you your yours yourself yourselves
""".split())

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Analyzer:
    """Turns text into index terms; one instance is shared because PyStemmer caches stems per instance."""

    def __init__(self, language: str = "english") -> None:
        self._stemmer = Stemmer.Stemmer(language)

    def terms(self, text: str) -> list[str]:
        tokens = [token for token in _TOKEN.findall(text.lower()) if token not in ENGLISH_STOP_WORDS]
        return self._stemmer.stemWords(tokens)
