"""The Kafka dispatcher with in-memory clients: signing, correlation, deadlines, failures.

The round trip through a real broker and the real pipeline is in
tests/integration/test_gateway.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import queue
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    TopicPartition,
)

from streams.contracts.catalog import load_catalog
from streams.contracts.records import (
    GuardVerdict,
    InferenceChunk,
    InferenceRequest,
    InferenceResult,
)
from streams.errors import ConfigurationError
from streams.gateway.dispatch import Blocked, Completed, DispatchError, NoSigningKeyError
from streams.gateway.idempotency import OutcomeCache, fingerprint, request_ids
from streams.gateway.kafka_dispatch import (
    BLOCKED_TOPIC,
    CHUNKS_TOPIC,
    REQUESTS_TOPIC,
    RESULTS_TOPIC,
    Codec,
    KafkaDispatcher,
    TenantSigners,
)
from streams.runtime.signing import TENANT_REQUEST, Verifier, new_keypair
from streams.settings import PROJECT_ROOT

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeMessage:
    def __init__(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        error: Any = None,
        *,
        partition: int = 0,
        offset: int = 0,
        timestamp_ms: int | None = None,
    ):
        self._topic, self._key, self._value, self._error = topic, key, value, error
        self._partition, self._offset, self._timestamp_ms = partition, offset, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        if self._timestamp_ms is None:
            return TIMESTAMP_NOT_AVAILABLE, -1
        return TIMESTAMP_CREATE_TIME, self._timestamp_ms

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> Any:
        return self._error


class FakeProducer:
    def __init__(self) -> None:
        self.produced: list[dict[str, Any]] = []
        self.fail_delivery = False
        self.full = False
        self._reports: list[Any] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        if self.full:
            raise BufferError("queue full")
        self.produced.append({"topic": topic, **kwargs})
        error = KafkaError(KafkaError._MSG_TIMED_OUT) if self.fail_delivery else None
        self._reports.append((kwargs["on_delivery"], error))

    def poll(self, _timeout: float) -> int:
        reports, self._reports = self._reports, []
        for callback, error in reports:
            callback(error, None)
        return len(reports)

    def flush(self, _timeout: float) -> int:
        self.poll(0)
        return 0


@dataclass
class FoundOffset:
    """What offsets_for_times answers for one partition (an error is settable here)."""

    topic: str
    partition: int
    offset: int
    error: Any = None


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.inbox: queue.Queue[FakeMessage] = queue.Queue()
        self.closed = False
        # What offsets_for_times was asked, and what it answers (-1: no record that recent).
        self.times_asked: list[tuple[str, int, int]] = []
        self.found: dict[tuple[str, int], int] = {}
        self.time_error: Any = None
        # What position() answers per partition (a transaction marker moves it past the
        # last record); absent: the offset it was assigned at.
        self.positions: dict[tuple[str, int], int] = {}

    def offsets_for_times(self, partitions: list[TopicPartition], _timeout: float) -> list[Any]:
        self.times_asked += [(tp.topic, tp.partition, tp.offset) for tp in partitions]
        return [
            FoundOffset(
                tp.topic,
                tp.partition,
                self.found.get((tp.topic, tp.partition), -1),
                self.time_error,
            )
            for tp in partitions
        ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        assigned = {(tp.topic, tp.partition): tp.offset for tp in self.assigned}
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.positions.get(
                    (tp.topic, tp.partition), assigned.get((tp.topic, tp.partition), -1001)
                ),
            )
            for tp in partitions
        ]

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assigned = partitions

    def poll(self, timeout: float) -> FakeMessage | None:
        try:
            return self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        self.closed = True


class Tokens:
    """A codec that keeps records in memory and counts what it was asked to decode."""

    def __init__(self) -> None:
        self.records: dict[bytes, dict[str, Any]] = {}
        self.decoded = 0

    def encode(self, record: Any) -> bytes:
        token = f"record-{len(self.records)}".encode()
        self.records[token] = dict(record)
        return token

    def decode(self, _topic: str, value: bytes) -> dict[str, Any]:
        self.decoded += 1
        return self.records[value]

    def codec(self) -> Codec:
        return Codec(self.encode, self.decode)


@pytest.fixture
def keys_dir(tmp_path: Path) -> tuple[Path, str]:
    private, public = new_keypair()
    (tmp_path / "acme.key").write_text(private + "\n")
    return tmp_path, public


class Rig:
    def __init__(
        self, keys_dir: tuple[Path, str], *, window_s: float = 0.0, max_entries: int = 1000
    ) -> None:
        directory, self.public = keys_dir
        # A prefixed deployment: what is produced names the cluster topic, what is signed the
        # logical one.
        self.catalog = load_catalog(PROJECT_ROOT / "schemas", prefix="prod.")
        self.producer = FakeProducer()
        self.consumer = FakeConsumer()
        self.tokens = Tokens()
        self.clock = NOW.timestamp
        self.cache = OutcomeCache(window_s=window_s, max_entries=max_entries, clock=self.clock)
        self.dispatcher = KafkaDispatcher(
            self.catalog,
            self.producer,
            self.consumer,
            self.tokens.codec(),
            TenantSigners(directory),
            end_offsets=lambda topics: {TopicPartition(t, 0): 7 for t in topics},
            cache=self.cache,
            clock=self.clock,
        )

    def reply_with(
        self, topic: str, record: Any, key: str | None = None, *, offset: int = 0
    ) -> None:
        value = self.tokens.encode(record.to_avro())
        request_id = key if key is not None else record.request_id
        physical = self.catalog.physical(topic)
        self.consumer.inbox.put(FakeMessage(physical, request_id.encode(), value, offset=offset))


def _request(tenant: str = "acme") -> InferenceRequest:
    return InferenceRequest.new(tenant, "minilm", "hello", source="gateway")


def _result(request: InferenceRequest) -> InferenceResult:
    return InferenceResult(
        request_id=request.request_id,
        tenant_id=request.tenant_id,
        model=request.model,
        status="ok",
        request_created_at=request.created_at,
        completed_at=NOW,
        embedding=[1.0],
    )


async def _answered(rig: Rig, request: InferenceRequest, reply: Any, timeout: float = 5.0):
    rig.dispatcher.start(asyncio.get_running_loop())
    try:
        sending = asyncio.create_task(rig.dispatcher.send(request, time.monotonic() + timeout))
        while not rig.producer.produced:
            await asyncio.sleep(0.01)
        if reply is not None:
            reply()
        return await sending
    finally:
        rig.dispatcher.stop()


def test_a_request_is_produced_signed_by_its_tenant_keyed_by_its_id(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    reply = asyncio.run(
        _answered(rig, request, lambda: rig.reply_with(RESULTS_TOPIC, _result(request)))
    )
    assert isinstance(reply, Completed) and reply.result.request_id == request.request_id
    [sent] = rig.producer.produced
    assert sent["topic"] == "prod.inference.requests"
    assert sent["key"] == request.request_id.encode()
    verifier = Verifier.from_settings([rig.public], "test", TENANT_REQUEST)
    # What guard checks: the logical topic, the key and the exact bytes produced.
    verifier.verify(REQUESTS_TOPIC, sent["key"], sent["value"], sent["headers"])
    assert rig.tokens.records[sent["value"]]["tenant_id"] == "acme"


def test_the_outcome_consumer_starts_at_the_end_offsets_of_the_outcome_and_chunk_topics(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    asyncio.run(_answered(rig, request, lambda: rig.reply_with(RESULTS_TOPIC, _result(request))))
    assigned = {(tp.topic, tp.partition, tp.offset) for tp in rig.consumer.assigned}
    physical = {rig.catalog.physical(t) for t in (RESULTS_TOPIC, BLOCKED_TOPIC, CHUNKS_TOPIC)}
    assert assigned == {(t, 0, 7) for t in physical}
    assert rig.consumer.closed


def test_a_blocked_request_comes_back_as_blocked(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=False, reason="pii_policy", checked_at=NOW
    )
    blocked = InferenceRequest.from_avro({**request.to_avro(), "guard": verdict.to_avro()})
    reply = asyncio.run(_answered(rig, request, lambda: rig.reply_with(BLOCKED_TOPIC, blocked)))
    assert isinstance(reply, Blocked) and reply.request.guard.reason == "pii_policy"


def test_other_replicas_outcomes_are_skipped_without_decoding(keys_dir):
    rig = Rig(keys_dir)
    request = _request()

    def replies() -> None:
        for _ in range(5):
            rig.reply_with(RESULTS_TOPIC, _result(_request()))
        rig.reply_with(RESULTS_TOPIC, _result(request))

    reply = asyncio.run(_answered(rig, request, replies))
    assert isinstance(reply, Completed) and reply.result.request_id == request.request_id
    assert rig.tokens.decoded == 1


def test_an_outcome_whose_body_names_another_request_is_not_taken(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    other = _result(_request())
    with pytest.raises(TimeoutError):
        asyncio.run(
            _answered(
                rig,
                request,
                lambda: rig.reply_with(RESULTS_TOPIC, other, key=request.request_id),
                timeout=0.3,
            )
        )


def test_no_outcome_by_the_deadline_is_a_timeout_and_the_request_is_forgotten(keys_dir):
    rig = Rig(keys_dir)
    with pytest.raises(TimeoutError):
        asyncio.run(_answered(rig, _request(), None, timeout=0.2))
    assert rig.dispatcher._pending == {}


def test_a_request_kafka_did_not_accept_fails_at_once(keys_dir):
    rig = Rig(keys_dir)
    rig.producer.fail_delivery = True
    started = time.monotonic()
    with pytest.raises(DispatchError, match="did not accept"):
        asyncio.run(_answered(rig, _request(), None, timeout=5.0))
    assert time.monotonic() - started < 4


def test_a_full_producer_queue_refuses_instead_of_waiting(keys_dir):
    rig = Rig(keys_dir)
    rig.producer.full = True

    async def go() -> None:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            await rig.dispatcher.send(_request(), time.monotonic() + 5)
        finally:
            rig.dispatcher.stop()

    with pytest.raises(DispatchError, match="queue is full"):
        asyncio.run(go())
    assert rig.dispatcher._pending == {}


def test_nothing_is_sent_before_start(keys_dir):
    rig = Rig(keys_dir)
    assert not rig.dispatcher.ready()
    with pytest.raises(DispatchError):
        asyncio.run(rig.dispatcher.send(_request(), time.monotonic() + 1))
    assert rig.producer.produced == []


def test_a_tenant_without_a_key_file_is_refused_without_producing(keys_dir):
    rig = Rig(keys_dir)

    async def go() -> None:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            await rig.dispatcher.send(_request("globex"), time.monotonic() + 1)
        finally:
            rig.dispatcher.stop()

    with pytest.raises(NoSigningKeyError, match="globex"):
        asyncio.run(go())
    assert rig.producer.produced == []


def test_a_tenant_id_that_is_not_one_never_becomes_a_path(keys_dir):
    with pytest.raises(NoSigningKeyError):
        TenantSigners(keys_dir[0])("../acme")


def test_a_gateway_whose_outcome_topics_are_missing_does_not_start(keys_dir):
    rig = Rig(keys_dir)
    rig.dispatcher.end_offsets = lambda topics: {TopicPartition(topics[0], 0): 0}

    async def go() -> None:
        rig.dispatcher.start(asyncio.get_running_loop())

    with pytest.raises(ConfigurationError, match="sluice schemas apply"):
        asyncio.run(go())
    assert not rig.dispatcher.ready()


# -- Idempotency-Key: retries ----------------------------------------------------------
def _idempotent(tenant: str = "acme", key: str = "retry-key") -> InferenceRequest:
    """A request whose id is derived from an idempotency key, created now (as a retry is)."""
    [request_id] = request_ids(tenant, key, fingerprint("/v1/embeddings", {"input": "x"}), 1)
    return dataclasses.replace(_request(tenant), request_id=request_id)


def _refused_as_duplicate(request: InferenceRequest) -> InferenceRequest:
    verdict = GuardVerdict(
        policy_version="1",
        action="block",
        redacted=False,
        reason="duplicate_request",
        checked_at=NOW,
    )
    return InferenceRequest.from_avro({**request.to_avro(), "guard": verdict.to_avro()})


async def _until(condition: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        await asyncio.sleep(0.01)


def test_a_retry_of_a_finished_call_is_answered_from_the_cache_without_producing(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    original = _idempotent()

    async def go() -> tuple[Any, Any]:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            first = asyncio.create_task(
                rig.dispatcher.send(original, time.monotonic() + 5, idempotent=True)
            )
            await _until(lambda: rig.producer.produced)
            rig.reply_with(RESULTS_TOPIC, _result(original))
            answered = await first
            # The retry: same id, its own created_at; nothing is produced for it.
            retry = dataclasses.replace(original, created_at=NOW)
            again = await rig.dispatcher.send(retry, time.monotonic() + 5, idempotent=True)
            return answered, again
        finally:
            rig.dispatcher.stop()

    answered, again = asyncio.run(go())
    assert isinstance(again, Completed) and again == answered
    assert len(rig.producer.produced) == 1
    assert rig.dispatcher._pending == {}


def test_produces_says_whether_a_send_would_produce_or_join_the_original(keys_dir):
    # The gateway asks before taking a pipeline slot: a retry that joins takes none.
    rig = Rig(keys_dir, window_s=600)
    original = _idempotent()

    async def go() -> list[bool]:
        rig.dispatcher.start(asyncio.get_running_loop())
        seen = [rig.dispatcher.produces(original, idempotent=True)]
        try:
            first = asyncio.create_task(
                rig.dispatcher.send(original, time.monotonic() + 5, idempotent=True)
            )
            await _until(lambda: rig.producer.produced)
            seen.append(rig.dispatcher.produces(original, idempotent=True))  # in flight
            seen.append(rig.dispatcher.produces(original))  # no key: always produced
            rig.reply_with(RESULTS_TOPIC, _result(original))
            await first
            seen.append(rig.dispatcher.produces(original, idempotent=True))  # cached
            seen.append(rig.dispatcher.produces(_idempotent(key="another"), idempotent=True))
            return seen
        finally:
            rig.dispatcher.stop()

    assert asyncio.run(go()) == [True, False, True, False, True]


def test_a_retry_while_the_original_is_in_flight_gets_its_result_not_its_own_refusal(keys_dir):
    # The original went through another replica: this one produces the retry, which guard
    # refuses as duplicate_request before the original's result comes.
    rig = Rig(keys_dir, window_s=600)
    retry = _idempotent()

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            sending = asyncio.create_task(
                rig.dispatcher.send(retry, time.monotonic() + 5, idempotent=True)
            )
            await _until(lambda: rig.producer.produced)
            rig.reply_with(BLOCKED_TOPIC, _refused_as_duplicate(retry))
            await _until(rig.consumer.inbox.empty)
            await asyncio.sleep(0.2)
            assert not sending.done(), "a duplicate_request block answered an idempotent request"
            rig.reply_with(RESULTS_TOPIC, _result(retry))
            return await sending
        finally:
            rig.dispatcher.stop()

    reply = asyncio.run(go())
    assert isinstance(reply, Completed) and reply.result.request_id == retry.request_id
    assert len(rig.producer.produced) == 1


def test_the_original_refusal_answers_a_retry_and_its_duplicate_copies_do_not(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    original = _idempotent()
    verdict = GuardVerdict(
        policy_version="1", action="block", redacted=False, reason="pii_policy", checked_at=NOW
    )
    refused = InferenceRequest.from_avro({**original.to_avro(), "guard": verdict.to_avro()})

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            # Both passed by before the retry: the original's block, then a copy's refusal.
            rig.reply_with(BLOCKED_TOPIC, refused)
            rig.reply_with(BLOCKED_TOPIC, _refused_as_duplicate(original))
            await _until(lambda: len(rig.cache.get(original.request_id)) == 2)
            return await rig.dispatcher.send(original, time.monotonic() + 5, idempotent=True)
        finally:
            rig.dispatcher.stop()

    reply = asyncio.run(go())
    assert isinstance(reply, Blocked) and reply.request.guard.reason == "pii_policy"
    assert rig.producer.produced == []


def test_a_duplicate_request_block_alone_in_the_cache_does_not_answer_a_retry(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    retry = _idempotent()

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            rig.reply_with(BLOCKED_TOPIC, _refused_as_duplicate(retry))
            await _until(lambda: rig.cache.get(retry.request_id))
            return await rig.dispatcher.send(retry, time.monotonic() + 0.3, idempotent=True)
        finally:
            rig.dispatcher.stop()

    with pytest.raises(TimeoutError):
        asyncio.run(go())
    assert len(rig.producer.produced) == 1  # produced: the original may still be coming


def test_a_call_without_a_key_still_ends_on_duplicate_request_as_a_refusal(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    request = _request()
    reply = asyncio.run(
        _answered(
            rig, request, lambda: rig.reply_with(BLOCKED_TOPIC, _refused_as_duplicate(request))
        )
    )
    assert isinstance(reply, Blocked) and reply.request.guard.reason == "duplicate_request"
    assert len(rig.cache) == 0  # fresh (UUIDv4) ids are never kept for retries


def test_a_retry_on_the_replica_that_waits_on_the_original_is_not_produced_again(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    original = _idempotent()

    async def go() -> list[Any]:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            first = asyncio.create_task(
                rig.dispatcher.send(original, time.monotonic() + 5, idempotent=True)
            )
            await _until(lambda: rig.producer.produced)
            second = asyncio.create_task(
                rig.dispatcher.send(original, time.monotonic() + 5, idempotent=True)
            )
            await _until(lambda: len(rig.dispatcher._pending[original.request_id]) == 2)
            rig.reply_with(RESULTS_TOPIC, _result(original))
            return list(await asyncio.gather(first, second))
        finally:
            rig.dispatcher.stop()

    replies = asyncio.run(go())
    assert all(isinstance(r, Completed) for r in replies)
    assert len(rig.producer.produced) == 1
    assert rig.dispatcher._pending == {}


def test_another_tenants_record_under_the_same_id_answers_nothing(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    mine = _idempotent()
    theirs = dataclasses.replace(_result(mine), tenant_id="globex")

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            rig.reply_with(RESULTS_TOPIC, theirs)
            await _until(lambda: rig.cache.get(mine.request_id))
            return await rig.dispatcher.send(mine, time.monotonic() + 0.3, idempotent=True)
        finally:
            rig.dispatcher.stop()

    with pytest.raises(TimeoutError):
        asyncio.run(go())


# -- Idempotency-Key: positioning and readiness ------------------------------------------
def test_with_a_window_the_consumer_starts_at_now_minus_the_window_and_is_ready_once_caught_up(
    keys_dir,
):
    rig = Rig(keys_dir, window_s=600)
    results = rig.catalog.physical(RESULTS_TOPIC)
    blocked = rig.catalog.physical(BLOCKED_TOPIC)
    rig.consumer.found = {(results, 0): 4}  # blocked has no record that recent: its end
    finished = _idempotent(key="before-the-restart")
    states: list[bool] = []

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            states.append(rig.dispatcher.ready())
            with pytest.raises(DispatchError, match="not reading outcomes"):
                await rig.dispatcher.send(finished, time.monotonic() + 1, idempotent=True)
            rig.reply_with(RESULTS_TOPIC, _result(_request()), offset=4)
            rig.reply_with(RESULTS_TOPIC, _result(finished), offset=5)
            await _until(rig.consumer.inbox.empty)
            await asyncio.sleep(0.2)
            states.append(rig.dispatcher.ready())  # offset 6 of 7 not read yet
            rig.reply_with(RESULTS_TOPIC, _result(_idempotent(key="other")), offset=6)
            await _until(rig.dispatcher.ready)
            # The caller's retry after the restart: answered from what was read back.
            return await rig.dispatcher.send(finished, time.monotonic() + 5, idempotent=True)
        finally:
            rig.dispatcher.stop()

    reply = asyncio.run(go())
    since_ms = int(NOW.timestamp() * 1000) - 600_000
    chunks = rig.catalog.physical(CHUNKS_TOPIC)
    assert sorted(rig.consumer.times_asked) == sorted(
        [(results, 0, since_ms), (blocked, 0, since_ms), (chunks, 0, since_ms)]
    )
    assigned = {(tp.topic, tp.partition, tp.offset) for tp in rig.consumer.assigned}
    assert assigned == {(results, 0, 4), (blocked, 0, 7), (chunks, 0, 7)}
    assert states == [False, False]
    assert isinstance(reply, Completed) and reply.result.request_id == finished.request_id
    assert rig.producer.produced == []
    assert rig.tokens.decoded == 1  # only the retry's own outcome was ever decoded


def test_a_partition_ending_in_a_transaction_marker_is_caught_up_by_its_position(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    results = rig.catalog.physical(RESULTS_TOPIC)
    rig.consumer.found = {(results, 0): 5}
    rig.consumer.positions = {(results, 0): 5}

    async def go() -> list[bool]:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            seen = [rig.dispatcher.ready()]
            rig.reply_with(RESULTS_TOPIC, _result(_request()), offset=5)  # 6 is a marker
            await _until(rig.consumer.inbox.empty)
            await asyncio.sleep(0.3)
            seen.append(rig.dispatcher.ready())
            rig.consumer.positions = {(results, 0): 7}
            await _until(rig.dispatcher.ready)
            return seen
        finally:
            rig.dispatcher.stop()

    assert asyncio.run(go()) == [False, False]


def test_without_a_window_the_consumer_starts_at_the_end_and_asks_no_times(keys_dir):
    rig = Rig(keys_dir, window_s=0)
    request = _request()
    asyncio.run(_answered(rig, request, lambda: rig.reply_with(RESULTS_TOPIC, _result(request))))
    assert rig.consumer.times_asked == []
    assert {tp.offset for tp in rig.consumer.assigned} == {7}


def test_offsets_the_broker_cannot_find_stop_the_start(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    rig.consumer.time_error = KafkaError(KafkaError._TIMED_OUT)

    async def go() -> None:
        rig.dispatcher.start(asyncio.get_running_loop())

    with pytest.raises(DispatchError, match="cannot find the offsets of the last 600 s"):
        asyncio.run(go())
    assert not rig.dispatcher.ready()


def test_the_outcome_cache_stays_within_its_bound_while_reading(keys_dir):
    rig = Rig(keys_dir, window_s=600, max_entries=3)

    async def go() -> None:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            for index in range(6):
                rig.reply_with(RESULTS_TOPIC, _result(_idempotent(key=f"k{index}")))
            await _until(lambda: rig.cache.evicted == 3)
        finally:
            rig.dispatcher.stop()

    asyncio.run(go())
    assert len(rig.cache) == 3
    assert rig.cache.get(_idempotent(key="k5").request_id)
    assert not rig.cache.get(_idempotent(key="k0").request_id)
    assert rig.tokens.decoded == 0  # kept as bytes, never decoded unless asked for


def _chunk(request: InferenceRequest, seq: int, text: str, tenant: str | None = None):
    return InferenceChunk(
        request_id=request.request_id,
        tenant_id=tenant or request.tenant_id,
        model=request.model,
        attempt="a1",
        seq=seq,
        text=text,
        final=False,
        created_at=NOW,
    )


def test_a_streamed_request_gets_its_tenants_chunks_in_order_then_its_outcome(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    got: list[InferenceChunk] = []

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        try:
            sending = asyncio.create_task(
                rig.dispatcher.send(request, time.monotonic() + 5, on_chunk=got.append)
            )
            while not rig.producer.produced:
                await asyncio.sleep(0.01)
            rig.reply_with(CHUNKS_TOPIC, _chunk(request, 0, "Hel"))
            rig.reply_with(CHUNKS_TOPIC, _chunk(request, 1, "evil", tenant="other"))
            rig.reply_with(CHUNKS_TOPIC, _chunk(request, 1, "lo"))
            await _until(lambda: len(got) == 2)
            rig.reply_with(RESULTS_TOPIC, _result(request))
            return await sending
        finally:
            rig.dispatcher.stop()

    reply = asyncio.run(go())
    assert isinstance(reply, Completed)
    assert [(c.seq, c.text) for c in got] == [(0, "Hel"), (1, "lo")]


def test_chunks_of_calls_that_do_not_stream_are_never_decoded_nor_kept(keys_dir):
    rig = Rig(keys_dir, window_s=600)
    request = _idempotent(key="not-streaming")

    def replies() -> None:
        rig.reply_with(CHUNKS_TOPIC, _chunk(request, 0, "x"))
        rig.reply_with(RESULTS_TOPIC, _result(request))

    async def go() -> Any:
        rig.dispatcher.start(asyncio.get_running_loop())
        await _until(rig.dispatcher.ready)
        try:
            sending = asyncio.create_task(
                rig.dispatcher.send(request, time.monotonic() + 5, idempotent=True)
            )
            while not rig.producer.produced:
                await asyncio.sleep(0.01)
            replies()
            return await sending
        finally:
            rig.dispatcher.stop()

    assert isinstance(asyncio.run(go()), Completed)
    assert rig.tokens.decoded == 1  # the result only
    assert {r.topic for r in rig.cache.get(request.request_id)} == {RESULTS_TOPIC}
