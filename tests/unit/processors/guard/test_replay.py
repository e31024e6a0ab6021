"""Request-id replay protection: the window, its bounds, the gate and its fail-closed paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_NOT_AVAILABLE, TopicPartition

from processors.guard.replay import (
    DUPLICATE_REQUEST,
    STALE_REQUEST,
    RequestIdGate,
    SeenIds,
    SeenRequests,
    decided_key,
    staleness,
    start_at,
)
from processors.guard.settings import GuardSettings
from streams.contracts.catalog import catalog_for
from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.errors import TransientError
from streams.runtime.testing import MemoryRegistry
from streams.settings import Settings
from tests.support.guard import MemoryView

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
HOUR_MS = 3_600_000


# -- the window -----------------------------------------------------------------------
def test_an_id_is_seen_from_its_first_time_until_the_window_ends() -> None:
    ids = SeenIds(window_s=3600, max_per_tenant=10, max_total=100)
    ids.add(("acme", "r1"), NOW_MS)
    ids.add(("acme", "r1"), NOW_MS + 5_000)  # a later sighting keeps the first time
    assert ids.first_seen(("acme", "r1"), NOW_MS + HOUR_MS) == NOW_MS
    assert ids.first_seen(("acme", "r1"), NOW_MS + HOUR_MS + 1) is None
    ids.add(("acme", "r1"), NOW_MS - 1_000)  # read back later from an earlier record
    assert ids.first_seen(("acme", "r1"), NOW_MS) == NOW_MS - 1_000


def test_ids_are_per_tenant() -> None:
    ids = SeenIds(window_s=3600, max_per_tenant=10, max_total=100)
    ids.add(("acme", "r1"), NOW_MS)
    assert ids.first_seen(("globex", "r1"), NOW_MS) is None


def test_expire_drops_only_ids_older_than_the_window() -> None:
    ids = SeenIds(window_s=3600, max_per_tenant=10, max_total=100)
    ids.add(("acme", "old"), NOW_MS - 2 * HOUR_MS)
    ids.add(("globex", "older"), NOW_MS - 3 * HOUR_MS)
    ids.add(("acme", "new"), NOW_MS - 1_000)
    assert ids.expire(NOW_MS) == 2
    assert len(ids) == 1
    assert ids.tenant_count("acme") == 1 and ids.tenant_count("globex") == 0
    assert ids.first_seen(("acme", "new"), NOW_MS) is not None


def test_a_tenant_flooding_ids_evicts_only_its_own_oldest() -> None:
    ids = SeenIds(window_s=3600, max_per_tenant=3, max_total=100)
    ids.add(("acme", "a1"), NOW_MS)
    for i in range(10):
        ids.add(("mallory", f"m{i}"), NOW_MS + i)
    assert ids.tenant_count("mallory") == 3
    assert ids.first_seen(("acme", "a1"), NOW_MS) == NOW_MS
    assert [ids.first_seen(("mallory", f"m{i}"), NOW_MS) is not None for i in (6, 7, 9)] == [
        False,
        True,
        True,
    ]
    assert ids.evicted == {"tenant": 7, "global": 0}


def test_the_global_bound_forgets_the_oldest_overall() -> None:
    ids = SeenIds(window_s=3600, max_per_tenant=10, max_total=3)
    for i, tenant in enumerate(["acme", "globex", "initech", "umbrella"]):
        ids.add((tenant, "r"), NOW_MS + i)
    assert len(ids) == 3
    assert ids.first_seen(("acme", "r"), NOW_MS + 10) is None
    assert ids.tenant_count("acme") == 0
    assert ids.evicted == {"tenant": 0, "global": 1}


def test_bounds_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SeenIds(window_s=60, max_per_tenant=0, max_total=10)


@pytest.mark.parametrize(
    ("created_at", "reason"),
    [
        (NOW, None),
        (NOW - timedelta(hours=6), None),
        (NOW - timedelta(hours=6, seconds=1), STALE_REQUEST),
        (NOW - timedelta(days=2), STALE_REQUEST),
        (NOW + timedelta(minutes=5), None),
        (NOW + timedelta(minutes=5, seconds=1), STALE_REQUEST),
    ],
)
def test_a_request_outside_the_window_or_dated_ahead_is_stale(
    created_at: datetime, reason: str | None
) -> None:
    assert staleness(created_at, NOW, window_s=6 * 3600, max_skew_s=300) == reason


def test_only_string_tenant_and_request_ids_are_keys() -> None:
    assert decided_key({"tenant_id": "acme", "request_id": "r1"}) == ("acme", "r1")
    assert decided_key({"tenant_id": "acme", "request_id": 7}) is None
    assert decided_key({"request_id": "r1"}) is None
    assert decided_key(b"raw") is None


def test_reading_starts_at_the_window_or_at_the_end_when_nothing_is_that_recent() -> None:
    assert start_at(TopicPartition("t", 0, 42), 100).offset == 42
    assert start_at(TopicPartition("t", 1, -1), 100).offset == 100


def test_the_default_window_is_the_raw_prompt_retention() -> None:
    # guard reads its outputs back over the window, so they must be kept longer.
    catalog = catalog_for(Settings())
    window_ms = GuardSettings().request_id_window_s * 1000
    assert window_ms == catalog.data_class("raw_prompt").retention_ms
    for topic in ("inference.requests.safe", "inference.requests.blocked"):
        kept = catalog.data_class(catalog.topic(topic).data_class).retention_ms
        assert kept is not None and kept > window_ms, topic


# -- the gate ---------------------------------------------------------------------------
def gate(view: MemoryView, **kwargs: Any) -> RequestIdGate:
    views = iter([view, *kwargs.pop("then", [])])
    return RequestIdGate(
        lambda: next(views),
        window_s=6 * 3600,
        max_skew_s=300,
        ready_timeout_s=0,
        clock=lambda: NOW,
    )


def test_the_second_copy_in_flight_is_a_duplicate_and_other_tenants_are_not() -> None:
    check = gate(MemoryView())
    assert check("acme", "r1", NOW) is None
    assert check("acme", "r1", NOW) == DUPLICATE_REQUEST
    assert check("globex", "r1", NOW) is None


def test_committed_ids_go_to_the_view_and_stay_duplicates() -> None:
    view = MemoryView()
    check = gate(view)
    check("acme", "r1", NOW)
    check.committed()
    assert view.remembered == [(("acme", "r1"), NOW_MS)]
    assert check("acme", "r1", NOW) == DUPLICATE_REQUEST


def test_a_rolled_back_batch_forgets_its_ids() -> None:
    view = MemoryView()
    check = gate(view)
    check("acme", "r1", NOW)
    check.rollback()
    check.committed()
    assert view.remembered == []
    assert check("acme", "r1", NOW) is None


def test_an_id_the_view_read_back_is_a_duplicate() -> None:
    view = MemoryView()
    view.ids.add(("acme", "r1"), NOW_MS - HOUR_MS)  # decided by another replica
    assert gate(view)("acme", "r1", NOW) == DUPLICATE_REQUEST


def test_a_stale_request_is_blocked_and_its_id_is_used() -> None:
    check = gate(MemoryView())
    assert check("acme", "r1", NOW - timedelta(days=2)) == STALE_REQUEST
    assert check("acme", "r1", NOW) == DUPLICATE_REQUEST


def test_peek_answers_like_the_gate_but_uses_no_id() -> None:
    view = MemoryView()
    view.ids.add(("acme", "read-back"), NOW_MS - HOUR_MS)
    check = gate(view)
    assert check.peek("acme", "r1", NOW) is None
    assert check.peek("acme", "r1", NOW) is None, "peeking did not use the id"
    assert check.peek("acme", "r1", NOW - timedelta(days=2)) == STALE_REQUEST
    assert check.peek("acme", "read-back", NOW) == DUPLICATE_REQUEST
    assert check("acme", "r1", NOW) is None
    assert check.peek("acme", "r1", NOW) == DUPLICATE_REQUEST, "in flight"
    check.committed()
    assert view.remembered == [(("acme", "r1"), NOW_MS)]


def test_the_gate_fails_closed_while_the_view_catches_up() -> None:
    view = MemoryView(ready=False)
    check = gate(view)
    with pytest.raises(TransientError, match="still reading"):
        check("acme", "r1", NOW)
    view.ready = True
    assert check("acme", "r1", NOW) is None


def test_a_dead_view_fails_closed_and_is_replaced() -> None:
    dead, fresh = MemoryView(), MemoryView()
    check = gate(dead, then=[fresh])
    dead.error = RuntimeError("consumer died")
    with pytest.raises(TransientError, match="request-id view failed"):
        check.ensure_ready()
    assert check("acme", "r1", NOW) is None
    check.committed()
    assert fresh.remembered == [(("acme", "r1"), NOW_MS)] and dead.remembered == []


# -- the view's decoding ----------------------------------------------------------------
class FakeMessage:
    def __init__(self, topic: str, value: bytes | None, timestamp: tuple[int, int]) -> None:
        self._topic, self._value, self._timestamp = topic, value, timestamp

    def topic(self) -> str:
        return self._topic

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp


def test_the_view_keeps_what_guard_decided_and_counts_what_it_cannot_read() -> None:
    settings = Settings()
    catalog = catalog_for(settings)
    serde = AvroSerde(MemoryRegistry.for_catalog(catalog), catalog, settings.registry)  # type: ignore[arg-type]
    view = SeenRequests(
        settings, catalog, window_s=6 * 3600, max_per_tenant=10, max_total=100, clock=lambda: NOW
    )
    physical = {catalog.physical(t): t for t in view.topics}
    blocked = catalog.physical("inference.requests.blocked")
    request = InferenceRequest("r1", "acme", "textgen", "hello", NOW - timedelta(seconds=1))
    encoded = serde.encoder("inference.requests.blocked")(request.to_avro())
    for message in [
        FakeMessage(blocked, encoded, (TIMESTAMP_CREATE_TIME, NOW_MS - 500)),
        FakeMessage(blocked, b"\x00\x00\x00\x00\x63garbage", (TIMESTAMP_CREATE_TIME, NOW_MS)),
        FakeMessage(blocked, None, (TIMESTAMP_NOT_AVAILABLE, 0)),
        FakeMessage("someone.elses.topic", encoded, (TIMESTAMP_CREATE_TIME, NOW_MS)),
    ]:
        view._apply(serde, physical, message)  # type: ignore[arg-type]
    assert (view.records_read, view.records_skipped) == (1, 3)
    assert view.first_seen(("acme", "r1"), NOW) == NOW_MS - 500
    assert len(view) == 1
