"""Replay protection for guard: a request id is used once per tenant within a window.

meter counts a request once per tenant and ``request_id`` (``processors.meter.state.seen_key``):
ten large requests that share one id would be metered as one. guard therefore
blocks a reused id, so only one of them ever reaches a model:

* ``duplicate_request``: the tenant's ``request_id`` was already decided by guard
  (passed or blocked) within ``request_id_window_s``;
* ``stale_request``: the request's ``created_at`` is older than the window (a copy that
  old could be a replay guard no longer remembers) or more than ``max_clock_skew_s``
  ahead of guard's clock (a date that would stay "fresh" past the window).

What guard decided is already durable in Kafka: every request it reads ends on
``inference.requests.safe`` or ``inference.requests.blocked`` (outputs keyed by
request id, one transaction per batch). ``SeenRequests`` follows both topics in a
background thread (committed records only, every partition, from the offsets of
``now - window``), so the memory survives restarts and is shared by every guard
replica of the consumer group without a store of its own. What guard decided
itself but has not read back yet (the batch in hand, batches committed a moment
ago) is kept by ``RequestIdGate`` ("in flight"): two copies in one batch are caught
too, and a batch that is rolled back forgets what it decided.

Memory is bounded: ``SeenIds`` keeps at most ``max_request_ids_per_tenant`` ids per
tenant (a tenant that floods ids evicts only its own oldest) and ``max_request_ids``
in all (then the oldest overall leave), and drops ids older than the window.

Like the budget gate, this fails closed: while the view has not caught up with the
topics (at start) or after its consumer died, ``RequestIdGate`` raises
``TransientError``, so the runner retries the batch later instead of letting a
duplicate through; a dead view is replaced on the next batch.

Limit: replicas see each other's decisions once they are committed and read back
(milliseconds to seconds). Copies that share a Kafka key (the SDK keys requests by
request id) land on one partition and so on one replica, which catches them in
order; copies sent under different keys to different partitions at the same moment
can each pass on a different replica within that lag.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, TopicPartition
from prometheus_client import Counter

from streams.contracts.catalog import Catalog
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError, TransientError
from streams.runtime import kafka
from streams.runtime.follower import TopicFollower
from streams.settings import Settings

log = logging.getLogger("sluice.guard")

# Verdict reasons (GuardVerdict.reason) of a request that may not be used again.
DUPLICATE_REQUEST = "duplicate_request"
STALE_REQUEST = "stale_request"
REASONS = (DUPLICATE_REQUEST, STALE_REQUEST)

#: guard's own outputs: every request it decided is on one of them.
DECIDED_TOPICS = ("inference.requests.safe", "inference.requests.blocked")

#: (tenant, request_id): ids are unique per tenant, not across tenants.
RequestKey = tuple[str, str]

BLOCKED_REPLAYS = Counter(
    "sluice_guard_replays_blocked_total",
    "Requests blocked because their request id was used before (duplicate_request) or "
    "their created_at is outside the replay window (stale_request).",
    ["reason"],
)
EVICTED_IDS = Counter(
    "sluice_guard_request_ids_evicted_total",
    "Request ids guard forgot before the window ended to stay within its bounds "
    "(tenant: SLUICE_GUARD__MAX_REQUEST_IDS_PER_TENANT; global: SLUICE_GUARD__MAX_REQUEST_IDS); "
    "a replay of an evicted id is not recognised.",
    ["scope"],
)
SKIPPED_RECORDS = Counter(
    "sluice_guard_request_id_records_skipped_total",
    "Records on guard's outputs that the request-id view could not decode.",
)


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def staleness(
    created_at: datetime, now: datetime, *, window_s: float, max_skew_s: float
) -> str | None:
    """``stale_request`` when ``created_at`` is outside ``[now - window, now + skew]``.

    A request older than the window could be a replay of one whose id guard has
    already forgotten; one dated ahead would stay inside the window for longer
    than guard remembers its id.
    """
    if created_at < now - timedelta(seconds=window_s):
        return STALE_REQUEST
    if created_at > now + timedelta(seconds=max_skew_s):
        return STALE_REQUEST
    return None


class SeenIds:
    """(tenant, request_id) → first-seen time (ms), bounded per tenant and in all.

    Not thread-safe (``SeenRequests`` holds a lock around it). Entries are kept
    in the order they were added, which is close to time order (records of
    several partitions interleave); ``expire`` drops from the oldest end, and
    ``first_seen`` ignores an entry older than the window that is still there.
    """

    def __init__(self, *, window_s: float, max_per_tenant: int, max_total: int) -> None:
        if max_per_tenant < 1 or max_total < 1:
            raise ValueError("SeenIds needs room for at least one id per tenant and in all")
        self.window_ms = int(window_s * 1000)
        self.max_per_tenant = max_per_tenant
        self.max_total = max_total
        self._all: OrderedDict[RequestKey, int] = OrderedDict()
        self._by_tenant: dict[str, OrderedDict[str, int]] = {}
        self.evicted = {"tenant": 0, "global": 0}

    def __len__(self) -> int:
        return len(self._all)

    def tenant_count(self, tenant: str) -> int:
        """How many ids of ``tenant`` are held."""
        return len(self._by_tenant.get(tenant, ()))

    def first_seen(self, key: RequestKey, now_ms: int) -> int | None:
        """When ``key`` was first seen (ms), if that is within the window of ``now_ms``."""
        at = self._all.get(key)
        if at is None or at < now_ms - self.window_ms:
            return None
        return at

    def add(self, key: RequestKey, at_ms: int) -> None:
        """Remember ``key`` as seen at ``at_ms``; an earlier time already held stays."""
        known = self._all.get(key)
        if known is not None:
            if at_ms < known:
                self._all[key] = at_ms
                self._by_tenant[key[0]][key[1]] = at_ms
            return
        tenant, request_id = key
        ids = self._by_tenant.setdefault(tenant, OrderedDict())
        ids[request_id] = at_ms
        self._all[key] = at_ms
        if len(ids) > self.max_per_tenant:
            oldest, _ = ids.popitem(last=False)
            del self._all[(tenant, oldest)]
            self._count_eviction("tenant")
        while len(self._all) > self.max_total:
            (old_tenant, old_id), _ = self._all.popitem(last=False)
            self._forget_in_tenant(old_tenant, old_id)
            self._count_eviction("global")

    def expire(self, now_ms: int) -> int:
        """Drop ids first seen before the window of ``now_ms``; how many were dropped."""
        horizon = now_ms - self.window_ms
        dropped = 0
        while self._all:
            key, at = next(iter(self._all.items()))
            if at >= horizon:
                break
            del self._all[key]
            self._forget_in_tenant(*key)
            dropped += 1
        return dropped

    def _forget_in_tenant(self, tenant: str, request_id: str) -> None:
        ids = self._by_tenant.get(tenant)
        if ids is None:
            return
        ids.pop(request_id, None)
        if not ids:
            del self._by_tenant[tenant]

    def _count_eviction(self, scope: str) -> None:
        self.evicted[scope] += 1
        EVICTED_IDS.labels(scope).inc()


def decided_key(value: Any) -> RequestKey | None:
    """(tenant_id, request_id) of a decoded InferenceRequest, or None if it has none."""
    if not isinstance(value, dict):
        return None
    tenant, request_id = value.get("tenant_id"), value.get("request_id")
    if not isinstance(tenant, str) or not isinstance(request_id, str):
        return None
    return tenant, request_id


def start_at(found: TopicPartition, end: int) -> TopicPartition:
    """Where to start reading a partition: the offset found for ``now - window``.

    ``offsets_for_times`` answers -1 when no record is that recent: start at the end.
    """
    offset = found.offset if found.offset >= 0 else end
    return TopicPartition(found.topic, found.partition, min(offset, end))


class SeenView(Protocol):
    """What ``RequestIdGate`` needs of a view (``SeenRequests``, or a test's in-memory one)."""

    error: BaseException | None

    def wait_ready(self, timeout: float) -> bool:
        """Whether the view has caught up with its topics as they were at start."""
        ...

    def first_seen(self, key: RequestKey, now: datetime) -> int | None:
        """When ``key`` was first decided (ms), within the window, or None."""
        ...

    def remember(self, keys: Iterable[tuple[RequestKey, int]]) -> None:
        """Add ids guard decided itself (before the view reads them back)."""
        ...

    def close(self) -> None:
        """Stop following the topics."""
        ...


class SeenRequests(TopicFollower):
    """Every (tenant, request_id) guard decided within the window, from its own outputs.

    The consumer (no consumer group: each replica reads everything) is assigned
    every partition of ``inference.requests.safe`` and ``.blocked`` at the offsets of
    ``now - window`` and reads committed records only; ``wait_ready`` returns once
    it has read up to the end offsets the topics had when it started. A record that
    does not decode is skipped and counted (``records_skipped``).
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        window_s: float,
        max_per_tenant: int,
        max_total: int,
        topics: tuple[str, ...] = DECIDED_TOPICS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        expire_every_s: float = 10.0,
    ) -> None:
        super().__init__(settings, catalog, topics, "request-id-view")
        self.window_s = window_s
        self._clock = clock
        self._expire_every_ms = int(expire_every_s * 1000)
        self._ids = SeenIds(window_s=window_s, max_per_tenant=max_per_tenant, max_total=max_total)
        self._lock = threading.Lock()
        self._next_expiry_ms = 0
        self._serde: AvroSerde | None = None
        self._physical: dict[str, str] = {}
        self.records_read = 0
        self.records_skipped = 0

    # -- what the gate calls ----------------------------------------------------
    def first_seen(self, key: RequestKey, now: datetime) -> int | None:
        """When ``key`` was first decided (ms), if within the window of ``now``."""
        with self._lock:
            return self._ids.first_seen(key, _ms(now))

    def remember(self, keys: Iterable[tuple[RequestKey, int]]) -> None:
        """Add (key, ms) pairs; the earliest time of a key stays."""
        with self._lock:
            for key, at in keys:
                self._ids.add(key, at)

    def __len__(self) -> int:
        with self._lock:
            return len(self._ids)

    # -- the consumer (streams.runtime.follower runs it) ---------------------------
    def _prepare(self) -> None:
        catalog = self.followed_catalog()
        self._serde = AvroSerde(kafka.registry(self.settings), catalog, self.settings.registry)
        self._physical = {catalog.physical(t): t for t in self.topics}

    def _assignment(
        self, consumer: Consumer, ends: dict[TopicPartition, int]
    ) -> list[TopicPartition]:
        since_ms = _ms(self._clock()) - self._ids.window_ms
        starts = consumer.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, since_ms) for tp in ends], 10.0
        )
        failed = [tp for tp in starts if tp.error is not None]
        if failed:
            raise TransientError(
                f"cannot find the offsets of the last {self.window_s:.0f} s on "
                f"{failed[0].topic}: {failed[0].error}"
            )
        return [start_at(tp, ends[tp]) for tp in starts]

    def _on_message(self, message: Message) -> None:
        if self._serde is None:
            raise RuntimeError("request-id view: a record arrived before the view was prepared")
        self._apply(self._serde, self._physical, message)

    def _tick(self) -> None:
        now_ms = _ms(self._clock())
        if now_ms >= self._next_expiry_ms:
            with self._lock:
                self._ids.expire(now_ms)
            self._next_expiry_ms = now_ms + self._expire_every_ms

    def _apply(self, serde: AvroSerde, physical: dict[str, str], message: Message) -> None:
        raw = message.value()
        topic = physical.get(message.topic() or "", "")
        key: RequestKey | None = None
        if raw is not None and topic:
            try:
                key = decided_key(
                    serde.decode(raw, self.followed_catalog().value_schema(topic), topic=topic)
                )
            except RecordError as error:
                log.warning(
                    "request-id view: skipping an unreadable record (%s)", type(error).__name__
                )
        if key is None:
            self.records_skipped += 1
            SKIPPED_RECORDS.inc()
            return
        kind, timestamp = message.timestamp()
        at = timestamp if kind != TIMESTAMP_NOT_AVAILABLE and timestamp > 0 else None
        self.records_read += 1
        self.remember([(key, at if at is not None else _ms(self._clock()))])


class RequestIdGate:
    """``gate(tenant, request_id, created_at)`` → why the request may not be used, or None.

    Remembers every request it is asked about ("in flight": the first copy passes
    or is blocked for its own reason, later copies are duplicates) until the batch
    commits (``committed``: handed to the view) or is rolled back (``rollback``:
    forgotten, as its outputs were never written).
    """

    def __init__(
        self,
        make_view: Callable[[], SeenView],
        *,
        window_s: float,
        max_skew_s: float,
        ready_timeout_s: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._make_view = make_view
        self._window_s = window_s
        self._max_skew_s = max_skew_s
        self._clock = clock
        self._in_flight: dict[RequestKey, int] = {}
        self._view = make_view()
        if not self._view.wait_ready(ready_timeout_s):
            # Not fatal: the first batch retries until the view has caught up.
            log.warning(
                "guard: request ids on %s not read within %.0f s; requests wait until they are",
                ", ".join(DECIDED_TOPICS),
                ready_timeout_s,
            )

    @classmethod
    def from_kafka(
        cls,
        settings: Settings,
        catalog: Catalog,
        *,
        window_s: float,
        max_skew_s: float,
        max_per_tenant: int,
        max_total: int,
        ready_timeout_s: float,
    ) -> RequestIdGate:
        """A gate over a ``SeenRequests`` view of guard's outputs on the cluster."""

        def view() -> SeenView:
            return SeenRequests(
                settings,
                catalog,
                window_s=window_s,
                max_per_tenant=max_per_tenant,
                max_total=max_total,
            ).start()

        return cls(view, window_s=window_s, max_skew_s=max_skew_s, ready_timeout_s=ready_timeout_s)

    def ensure_ready(self) -> None:
        """Raise ``TransientError`` unless the view can answer (the batch is then retried)."""
        view = self._view
        if view.error is not None:
            self._view = self._make_view()
            raise TransientError(f"request-id view failed ({type(view.error).__name__}); restarted")
        if not view.wait_ready(0):
            raise TransientError(
                "request-id view is still reading inference.requests.safe/.blocked"
            )

    def __call__(self, tenant: str, request_id: str, created_at: datetime) -> str | None:
        """Why this request must be blocked (duplicate or stale), or None; it is remembered."""
        self.ensure_ready()
        now = self._clock()
        key = (tenant, request_id)
        seen = self._seen(key, now)
        if not seen:
            self._in_flight[key] = _ms(now)
        reason = self._reason(seen, created_at, now)
        if reason is not None:
            BLOCKED_REPLAYS.labels(reason).inc()
        return reason

    def peek(self, tenant: str, request_id: str, created_at: datetime) -> str | None:
        """What the gate would answer now, without remembering the id or counting a block.

        The rate limit asks it first, so a copy that is blocked as a duplicate anyway is
        not charged against its tenant's allowance.
        """
        self.ensure_ready()
        now = self._clock()
        return self._reason(self._seen((tenant, request_id), now), created_at, now)

    def _seen(self, key: RequestKey, now: datetime) -> bool:
        return key in self._in_flight or self._view.first_seen(key, now) is not None

    def _reason(self, seen: bool, created_at: datetime, now: datetime) -> str | None:
        if seen:
            return DUPLICATE_REQUEST
        return staleness(created_at, now, window_s=self._window_s, max_skew_s=self._max_skew_s)

    def committed(self) -> None:
        """The batch's outputs are committed: its ids are the view's from now on."""
        self._view.remember(self._in_flight.items())
        self._in_flight.clear()

    def rollback(self) -> None:
        """The batch was not committed: forget the ids it decided."""
        self._in_flight.clear()

    def close(self) -> None:
        """Stop the view's consumer."""
        self._view.close()
