"""A parse function for the parse-timeout test, in a module light enough for the worker to import fast."""

import time

from ingestion.loaders.base import ParsedDocument


def sleep_then_parse(data, source, kind, options):
    if data == b"slow":
        time.sleep(60)
    return [ParsedDocument(text=data.decode(), document_id=source)]
