"""Caches whose size a producer cannot grow: least recently used entries leave first.

A processor that caches something per tenant, per model or per user keys the
cache with a string that a producer chose, so an unbounded dict grows with
every made-up id it is sent. ``BoundedCache`` keeps at most ``max_entries``
and drops the least recently used entry to make room; what it held is
recomputed when that key comes back (every cache here holds something that
can be derived again, never state that must survive).

Why a small class rather than ``functools.lru_cache``: the caches live on
instances (one hasher, one policy, one redactor per engine) and take their
bound from settings at construction, while ``lru_cache`` on a method is
shared by every instance, keeps each ``self`` alive and fixes its bound at
import time. A class also tells tests how many entries it holds.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar, overload

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
T = TypeVar("T")

#: The bound of a per-tenant cache when no setting names one.
DEFAULT_MAX_ENTRIES = 10_000


class BoundedCache(Generic[K, V]):
    """A mapping of at most ``max_entries`` entries, least recently used evicted first.

    Thread-safe: each operation holds a lock (guard's analysis thread and its
    caller share the policy's cache).
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"a bounded cache needs room for at least one entry: {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self.evictions = 0

    @overload
    def get(self, key: K) -> V | None: ...
    @overload
    def get(self, key: K, default: T) -> V | T: ...
    def get(self, key: K, default: object = None) -> object:
        """The value of ``key`` (now the most recently used), or ``default``."""
        with self._lock:
            try:
                self._entries.move_to_end(key)
            except KeyError:
                return default
            return self._entries[key]

    def __getitem__(self, key: K) -> V:
        with self._lock:
            self._entries.move_to_end(key)
            return self._entries[key]

    def __setitem__(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
                self.evictions += 1

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget every entry."""
        with self._lock:
            self._entries.clear()
