"""Per-API-key request rate and concurrent-upload limits, kept in process memory.

The counters live in one process, so a deployment that runs several worker processes enforces each limit
per process. They start empty after a restart.
"""

import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.errors import TooManyRequests
from app.settings import Settings

# A key that has been idle this long has a full bucket again, so its entry can be dropped.
_IDLE_ENTRY_SECONDS = 600.0
_SWEEP_EVERY_SECONDS = 60.0


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key: `burst` requests at once, then `per_second` sustained."""

    def __init__(self, *, per_second: float, burst: int, clock=time.monotonic) -> None:
        self.per_second = per_second
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._last_sweep = clock()

    def acquire(self, key_id: str) -> None:
        """Take one token for `key_id`, or raise TooManyRequests with the seconds until the next one."""
        if self.per_second <= 0:
            return
        now = self._clock()
        with self._lock:
            self._sweep(now)
            bucket = self._buckets.get(key_id)
            if bucket is None:
                bucket = self._buckets[key_id] = _Bucket(tokens=float(self.burst), updated=now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.per_second)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait = (1.0 - bucket.tokens) / self.per_second
        # Retry-After carries whole seconds, so the wait is rounded up.
        retry_after = max(1, math.ceil(wait))
        raise TooManyRequests(f"rate limit of {self.per_second:g} requests per second for this API key exceeded "
                              f"(DOMAINRAG_RATE_LIMIT_PER_SECOND); retry after {retry_after} s",
                              headers={"Retry-After": str(retry_after)})

    def _sweep(self, now: float) -> None:
        if now - self._last_sweep < _SWEEP_EVERY_SECONDS:
            return
        self._last_sweep = now
        idle = [key for key, bucket in self._buckets.items() if now - bucket.updated > _IDLE_ENTRY_SECONDS]
        for key in idle:
            del self._buckets[key]


class UploadSlots:
    """Counts the upload requests each key has in progress and rejects one over the maximum."""

    # The retry hint sent with a rejection, because uploads usually finish within seconds.
    RETRY_AFTER_SECONDS = 1

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._in_progress: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, key_id: str) -> Iterator[None]:
        with self._lock:
            current = self._in_progress.get(key_id, 0)
            if current >= self.maximum:
                raise TooManyRequests(
                    f"this API key already has {current} uploads in progress, the maximum "
                    f"(DOMAINRAG_MAX_CONCURRENT_UPLOADS); retry when one has finished",
                    headers={"Retry-After": str(self.RETRY_AFTER_SECONDS)})
            self._in_progress[key_id] = current + 1
        try:
            yield
        finally:
            with self._lock:
                remaining = self._in_progress[key_id] - 1
                if remaining:
                    self._in_progress[key_id] = remaining
                else:
                    del self._in_progress[key_id]


class KeyLimits:
    """The limits that apply to every tenant API key, built from settings."""

    def __init__(self, settings: Settings) -> None:
        self.requests = RateLimiter(per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)
        self.uploads = UploadSlots(settings.max_concurrent_uploads)
