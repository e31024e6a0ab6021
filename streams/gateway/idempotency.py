"""``Idempotency-Key``: a caller may retry a call without it being served or billed twice.

What a key does (docs/explanation/gateway.md, "Idempotency", has the whole design):

* **The ids.** The request ids of a call with a key are not fresh UUIDs but
  ``uuid5(NAMESPACE, tenant, body fingerprint, key, input index)``: a retry with
  the same key and body, through any API key of the tenant and any replica, makes
  the same ids. guard serves a tenant's request id once within its window, so the
  retry's own copy is refused as ``duplicate_request`` and never charged; the
  caller's answer is the first call's outcome (``KafkaDispatcher`` ignores the
  retry's ``duplicate_request`` and waits for, or finds in its cache, the original's).
* **The body.** Its fingerprint (SHA-256 of the route and the canonical JSON body)
  is part of the ids, so the same key with another body is another request on every
  replica, never answered with the first body's outcome. A replica that still
  remembers the key's first body refuses the second with 409
  ``idempotency_key_reused`` (``KeyMemory``): reusing a key for another body is a
  client bug worth telling about, not silently serving.
* **The outcomes.** ``OutcomeCache`` keeps the raw outcome records of derived ids
  (UUIDv5: other requests are not kept) for a bounded time and count, so a retry of a
  finished call is answered at once without producing anything.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streams.gateway.errors import OpenAIError, invalid

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: Fixed for good: changing it would make every retry in flight a new request.
NAMESPACE = uuid.UUID("5c1ce0a1-6d2b-4c6e-9f0a-1de4907e0c75")
#: Outcome records kept per request id: the original's, and a few copies of it
#: (the retries' ``duplicate_request`` blocks, a record another tenant wrote under the
#: same id) that must not push it out.
_RECORDS_PER_ID = 4


def parse_key(value: str | None) -> str | None:
    """The header's key, None when absent; 400 unless it is 1..255 printable ASCII."""
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in value):
        # Never the value itself: it is the caller's, and could be anything.
        raise invalid(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters; "
            "send a unique value per call, such as a UUID, and the same value on its retries.",
            HEADER,
        )
    return value


def fingerprint(route: str, body: Any) -> str:
    """SHA-256 (hex) of the route and the body as canonical JSON (sorted keys, compact)."""
    canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(route.encode("utf-8") + b"\n" + canonical).hexdigest()


def request_ids(tenant: str, key: str, body_fingerprint: str, count: int) -> list[str]:
    """The request ids of a call's ``count`` inputs: the same for the same inputs, always."""
    # A newline cannot occur in a tenant id, a fingerprint or a key (printable ASCII only).
    return [
        str(uuid.uuid5(NAMESPACE, f"{tenant}\n{body_fingerprint}\n{key}\n{index}"))
        for index in range(count)
    ]


def is_derived(request_id: str) -> bool:
    """Whether ``request_id`` may be a derived id (a UUIDv5), on its text alone (cheap)."""
    return len(request_id) == 36 and request_id[14] == "5"


@dataclass(frozen=True)
class _Remembered:
    fingerprint: str
    at: float


class KeyMemory:
    """The body fingerprint of each (tenant, key) this replica saw, for ``window_s``.

    Used on the event loop only. At most ``max_entries`` keys: the oldest leave first,
    after which a reused key is no longer recognised here (its ids still differ).
    """

    def __init__(
        self,
        *,
        window_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._keys: OrderedDict[tuple[str, str], _Remembered] = OrderedDict()

    def check(self, tenant: str, key: str, body_fingerprint: str) -> None:
        """Remember the key's body; 409 ``idempotency_key_reused`` if it had another one."""
        now = self._clock()
        self._expire(now)
        seen = self._keys.get((tenant, key))
        if seen is None:
            self._keys[(tenant, key)] = _Remembered(body_fingerprint, now)
            while len(self._keys) > self.max_entries:
                self._keys.popitem(last=False)
            return
        if seen.fingerprint != body_fingerprint:
            raise OpenAIError(
                409,
                f"This {HEADER} was already used with a different request body or route; "
                "use a new key for a new request.",
                param=HEADER,
                code="idempotency_key_reused",
            )

    def __len__(self) -> int:
        return len(self._keys)

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._keys:
            oldest = next(iter(self._keys.values()))
            if oldest.at >= horizon:
                return
            self._keys.popitem(last=False)


@dataclass(frozen=True)
class CachedOutcome:
    """One outcome record as read from Kafka: its logical topic and its undecoded value."""

    topic: str
    value: bytes
    at_ms: int


class OutcomeCache:
    """Recent outcome records of derived request ids, undecoded, bounded in count and age.

    Written by the dispatcher's polling thread, read on the event loop: every method
    holds the lock. ``at_ms`` is the record's Kafka timestamp, so records read while
    catching up at start expire when they would have had they been read live.
    """

    def __init__(
        self,
        *,
        window_s: float,
        max_entries: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window_ms = int(window_s * 1000)
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        # request id -> its records, oldest id first (by when it was first put).
        self._records: OrderedDict[str, list[CachedOutcome]] = OrderedDict()
        self.evicted = 0

    def put(self, request_id: str, topic: str, value: bytes, at_ms: int | None = None) -> None:
        """Keep one outcome record of ``request_id`` (the first few per id only)."""
        if self.window_ms <= 0:
            return
        now_ms = self._now_ms()
        at = now_ms if at_ms is None or at_ms <= 0 else min(at_ms, now_ms)
        if at < now_ms - self.window_ms:
            return  # already past the window: a record read while catching up
        with self._lock:
            records = self._records.get(request_id)
            if records is None:
                records = self._records[request_id] = []
            if len(records) < _RECORDS_PER_ID:
                records.append(CachedOutcome(topic, value, at))
            self._expire(now_ms)
            while len(self._records) > self.max_entries:
                self._records.popitem(last=False)
                self.evicted += 1

    def get(self, request_id: str) -> list[CachedOutcome]:
        """The records kept for ``request_id`` within the window, in the order they were read."""
        now_ms = self._now_ms()
        with self._lock:
            records = self._records.get(request_id, [])
            return [r for r in records if r.at_ms >= now_ms - self.window_ms]

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _expire(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        while self._records:
            first = next(iter(self._records.values()))
            if first and first[0].at_ms >= horizon:
                return
            self._records.popitem(last=False)
