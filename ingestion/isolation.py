"""Parsing in a child process, so a file that makes a parser hang or run away is stopped by a timeout.

PDF and HTML parsers can loop for minutes on a malformed file. Python cannot interrupt a running thread, so
the parser runs in one spawned worker process that is killed and replaced when a file exceeds the limit.
"""

import logging
import multiprocessing
import threading
from collections.abc import Callable
from multiprocessing.pool import Pool

from ingestion.loaders.base import ItemError, ParsedDocument, ParseOptions
from ingestion.pipeline import parse_item

logger = logging.getLogger(__name__)


class ParseTimeoutError(Exception):
    pass


ParseFunction = Callable[[bytes, str, str, ParseOptions], list[ParsedDocument | ItemError]]


def _parse_all(data: bytes, source: str, kind: str, options: ParseOptions) -> list[ParsedDocument | ItemError]:
    return list(parse_item(data, source=source, kind=kind, options=options))


def _ready() -> bool:
    return True


class IsolatedParser:
    """Parse uploads in a worker process with a per-file time limit; a limit of 0 parses in this process."""

    def __init__(self, timeout_s: float, *, parse: ParseFunction | None = None) -> None:
        self.timeout_s = timeout_s
        # Module-level so the spawned worker can import it by name; tests pass a slow one.
        self._parse = parse or _parse_all
        self._pool: Pool | None = None
        self._lock = threading.Lock()

    def parse(self, data: bytes, *, source: str, kind: str,
              options: ParseOptions) -> list[ParsedDocument | ItemError]:
        """Return the item's documents and errors; a parse over the limit returns one ItemError saying so."""
        if self.timeout_s <= 0:
            return self._parse(data, source, kind, options)
        with self._lock:
            pool = self._start()
            result = pool.apply_async(self._parse, (data, source, kind, options))
            try:
                return result.get(self.timeout_s)
            except multiprocessing.TimeoutError:
                logger.warning("parse timed out; restarting the parser process",
                               extra={"source": source, "timeout_s": self.timeout_s})
                self._kill()
                return [ItemError(source, f"parsing took longer than the limit of {self.timeout_s:g} s "
                                          "(DOMAINRAG_PARSE_TIMEOUT_S); the file may be malformed, or raise the limit")]

    def close(self) -> None:
        with self._lock:
            self._kill()

    def _start(self) -> Pool:
        if self._pool is None:
            # spawn, not fork: forking a process that runs threads (uvicorn, torch) can copy held locks.
            self._pool = multiprocessing.get_context("spawn").Pool(processes=1)
            # Wait for the worker to start and import the parsers, so start-up does not count against a file.
            self._pool.apply(_ready)
        return self._pool

    def _kill(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
