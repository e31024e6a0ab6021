"""An exact-match cache of deterministic model answers, in one infer process's memory.

A request whose answer cannot change (an embedding; a completion at temperature 0)
is answered from an earlier identical request's output instead of a Triton call.
What "identical" means is the key: a SHA-256 over the tenant, the model and its
version, the operation, the input text (as guard passed it), the token limit and
the temperature. The tenant is in the key, so one tenant's cached answer never
serves another's request.

Only raw model outputs live here, in memory, never on a topic; a hit's result goes
through guard's output side like any other. The cache is bounded by entries and by
payload bytes (output text as UTF-8, 8 bytes per embedding value), least recently
used first out, and every entry expires after a TTL.

Entries are filled from a batch's answers but become visible only once its
transaction commits (``commit``); an aborted batch's answers are dropped
(``rollback``), so a retried request is served and metered as its first attempt
would have been. Within one batch, an identical request behind one already going
to Triton is not sent: it gets the first one's answer, as a hit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from processors.infer.planning import Completion, Job
from processors.infer.settings import InferSettings
from processors.infer.triton_calls import BackendRejectedError
from streams.contracts.records import InferenceResult

HITS = Counter(
    "sluice_infer_cache_hits_total",
    "Requests answered from infer's response cache instead of Triton, by model.",
    ["model"],
)
MISSES = Counter(
    "sluice_infer_cache_misses_total",
    "Cacheable requests sent to Triton because no identical answer was cached, by model.",
    ["model"],
)
EVICTIONS = Counter(
    "sluice_infer_cache_evictions_total",
    "Cached answers dropped, by model and reason (size: over the entry or byte bound; "
    "ttl: expired).",
    ["model", "reason"],
)
CACHE_BYTES = Gauge(
    "sluice_infer_cache_bytes",
    "Payload bytes held by this process's response cache (output text and embedding values).",
)
CACHE_ENTRIES = Gauge(
    "sluice_infer_cache_entries", "Answers held by this process's response cache."
)

#: Bytes counted per embedding value: it is held as a C double.
FLOAT_BYTES = 8
Outcomes = dict[int, "Completion | BackendRejectedError"]


def cache_key(job: Job, model_version: str) -> str | None:
    """The exact-match key of ``job``'s answer; None when its answer may vary (not cached)."""
    request = job.request
    if job.model.task == "embeddings":
        temperature = None
    elif job.model.task == "text_completion" and request.temperature == 0:
        temperature = 0.0  # greedy: the same prompt gives the same text
    else:
        return None  # sampled (or the model's default temperature, which may sample)
    # JSON of a list: unambiguous field boundaries whatever the texts contain.
    fields = [
        request.tenant_id,
        request.model,
        model_version,
        job.model.operation,
        request.input_text,
        job.max_tokens,
        temperature,
    ]
    encoded = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What the model answered once, and how big it is."""

    model: str
    output_text: str | None
    embedding: array[float] | None
    output_tokens: int | None
    size: int
    expires_at: float

    def completion(self, started_ms: float) -> Completion:
        """The answer as a Completion that took no Triton call (no time, no batch)."""
        return Completion(
            output_text=self.output_text,
            embedding=None if self.embedding is None else self.embedding.tolist(),
            output_tokens=self.output_tokens,
            started_ms=started_ms,
            inference_ms=0.0,
            batch_size=0,
        )


def payload_bytes(done: Completion) -> int:
    """The bytes an answer counts against the cache's byte bound."""
    text = len(done.output_text.encode("utf-8")) if done.output_text is not None else 0
    return text + FLOAT_BYTES * len(done.embedding or ())


class ResponseCache:
    """LRU of answers bounded by entries, bytes and age; ``max_entries`` 0 disables it."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, CachedAnswer] = OrderedDict()
        self._pending: list[tuple[str, CachedAnswer]] = []
        self.bytes = 0

    @classmethod
    def from_settings(cls, settings: InferSettings) -> ResponseCache:
        """The cache ``SLUICE_INFER__CACHE_*`` describe."""
        return cls(settings.cache_max_entries, settings.cache_max_bytes, settings.cache_ttl_s)

    @property
    def enabled(self) -> bool:
        """False when configured off: nothing is looked up or kept."""
        return self.max_entries > 0 and self.max_bytes > 0 and self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAnswer | None:
        """The live answer under ``key`` (now the most recently used), or None."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self._clock():
            self._drop(key, "ttl")
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, model: str, done: Completion) -> None:
        """Keep ``done`` under ``key`` once the batch that made it commits."""
        size = payload_bytes(done)
        if not self.enabled or size > self.max_bytes:
            return  # an answer larger than the whole cache is not worth evicting it all for
        embedding = None if done.embedding is None else array("d", done.embedding)
        entry = CachedAnswer(model, done.output_text, embedding, done.output_tokens, size, 0.0)
        self._pending.append((key, entry))

    def commit(self) -> None:
        """The batch committed: its answers become visible, oldest entries make room."""
        now = self._clock()
        for key, entry in self._pending:
            if key in self._entries:
                self._drop(key, None)
            self._entries[key] = dataclasses.replace(entry, expires_at=now + self.ttl_s)
            self.bytes += entry.size
        self._pending.clear()
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest, "size")
        self._observe()

    def rollback(self) -> None:
        """The batch did not commit: forget the answers it would have added."""
        self._pending.clear()

    def lookup(self, jobs: Sequence[Job], versions: Mapping[str, str]) -> BatchLookup:
        """Sort a batch's jobs into answered from the cache and to be sent to Triton."""
        return BatchLookup(self, jobs, versions, started_ms=time.time() * 1000)

    def _drop(self, key: str, reason: str | None) -> None:
        entry = self._entries.pop(key)
        self.bytes -= entry.size
        if reason is not None:
            EVICTIONS.labels(entry.model, reason).inc()
        self._observe()

    def _observe(self) -> None:
        CACHE_BYTES.set(self.bytes)
        CACHE_ENTRIES.set(len(self._entries))


class BatchLookup:
    """One batch's use of the cache: what is answered already, what goes to Triton.

    ``to_send`` are the jobs Triton must answer; ``answers`` adds, to Triton's
    answers, those of the cache hits and of the batch's repeats; ``finish`` marks a
    hit's result, or keeps a fresh answer for later batches.
    """

    def __init__(
        self,
        cache: ResponseCache,
        jobs: Sequence[Job],
        versions: Mapping[str, str],
        *,
        started_ms: float,
    ) -> None:
        self._cache = cache
        self._started_ms = started_ms
        self._hits: dict[int, CachedAnswer] = {}
        self._repeats: dict[int, int] = {}  # index of a repeat -> index of its first
        self._keys: dict[int, str] = {}  # index of a sent, cacheable job -> its key
        self.to_send: list[Job] = []
        first: dict[str, int] = {}
        for job in jobs:
            key = cache_key(job, versions[job.model.triton_model]) if cache.enabled else None
            if key is None:
                self.to_send.append(job)
                continue
            cached = cache.get(key)
            if cached is not None:
                self._hits[job.index] = cached
            elif key in first:
                self._repeats[job.index] = first[key]
            else:
                first[key] = job.index
                self._keys[job.index] = key
                self.to_send.append(job)
                MISSES.labels(job.model.name).inc()

    def answers(self, done: Outcomes) -> Outcomes:
        """Triton's answers plus the cache's: one per job of the batch.

        A repeat gets its first's answer, or its first's rejection (the same request
        would be refused the same way).
        """
        merged: Outcomes = dict(done)
        for index, cached in self._hits.items():
            merged[index] = cached.completion(self._started_ms)
        for index, first in self._repeats.items():
            answer = done[first]
            merged[index] = (
                answer
                if isinstance(answer, BackendRejectedError)
                else dataclasses.replace(answer, inference_ms=0.0, batch_size=0)
            )
        return merged

    def finish(self, job: Job, done: Completion, result: InferenceResult) -> InferenceResult:
        """``result`` marked as a hit when the cache answered it; a fresh answer is kept.

        ``done`` is the answer with its output tokens counted, so a hit reports the
        same tokens as the request that filled the cache.
        """
        if job.index in self._hits or job.index in self._repeats:
            HITS.labels(job.model.name).inc()
            return dataclasses.replace(
                result, cache_hit=True, cached_input_tokens=result.input_tokens
            )
        key = self._keys.get(job.index)
        if key is not None:
            self._cache.put(key, job.model.name, done)
        return result
