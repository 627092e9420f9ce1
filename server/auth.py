"""API-key authentication (constant-time) and per-key token-bucket rate limits."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadOptionError
from .errors import ServiceError

API_KEY_HEADER = "x-api-key"
MIN_SECRET_CHARS = 16


def parse_api_keys(lines: Iterable[str], source: str) -> dict[str, str]:
    """``key_id:secret`` per line ('#' comments, blank lines ignored) -> {key_id: secret}."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret = line.partition(":")
        if not sep or not key_id.strip() or len(secret.strip()) < MIN_SECRET_CHARS:
            # Never echo the line: it may be a secret.
            raise BadOptionError(f"{source} line {number}: expected key_id:secret with a secret of "
                                 f"at least {MIN_SECRET_CHARS} characters")
        if key_id.strip() in keys:
            raise BadOptionError(f"{source} line {number}: duplicate key id {key_id.strip()!r}")
        keys[key_id.strip()] = secret.strip()
    return keys


def load_api_keys(entries: Sequence[str], path: str | None) -> dict[str, str]:
    keys = parse_api_keys(entries, "api_keys")
    if path:
        for key_id, secret in parse_api_keys(Path(path).read_text().splitlines(), path).items():
            if key_id in keys:
                raise BadOptionError(f"{path}: duplicate key id {key_id!r}")
            keys[key_id] = secret
    return keys


class ApiKeyAuth:
    """Checks the ``x-api-key`` metadata against every configured key without early exit."""

    def __init__(self, keys: dict[str, str]) -> None:
        # Compare fixed-length digests so neither the length nor the content of a secret leaks through timing.
        self._digests = [(key_id, hashlib.sha256(secret.encode()).digest()) for key_id, secret in keys.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
        """The key id of a valid key, None when auth is off; ServiceError(API_KEY_*) otherwise."""
        if not self.enabled:
            return None
        presented = next((v for k, v in metadata if k == API_KEY_HEADER), None)
        if not presented:
            raise ServiceError("API_KEY_MISSING", f"this server needs an API key in the {API_KEY_HEADER!r} metadata")
        digest = hashlib.sha256(presented.encode() if isinstance(presented, str) else presented).digest()
        match = None
        for key_id, expected in self._digests:
            if hmac.compare_digest(digest, expected) and match is None:
                match = key_id
        if match is None:
            raise ServiceError("API_KEY_INVALID", "the API key is not valid")
        return match


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token bucket per caller: ``per_minute`` sustained, ``burst`` at once. ``per_minute`` 0 disables it."""

    def __init__(self, per_minute: float, burst: int, max_callers: int = 10_000, clock=time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.max_callers = max_callers
        self.clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def acquire(self, caller: str) -> None:
        """Take one token or raise ServiceError(RATE_LIMITED) with retry_after_ms."""
        if self.rate <= 0:
            return
        now = self.clock()
        with self._lock:
            bucket = self._buckets.pop(caller, None) or _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
            self._buckets[caller] = bucket  # most recently used last
            while len(self._buckets) > self.max_callers:  # bounded memory: forget the idlest caller
                self._buckets.popitem(last=False)
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return
            wait_ms = int((1.0 - bucket.tokens) / self.rate * 1000) + 1
        raise ServiceError("RATE_LIMITED", f"rate limit exceeded; retry in {wait_ms} ms",
                           {"retry_after_ms": str(wait_ms)})
