"""The Kafka dispatcher with in-memory clients: signing, correlation, deadlines, failures.

The round trip through a real broker and the real pipeline is in
tests/integration/test_gateway.py.
"""

from __future__ import annotations

import asyncio
import queue
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from streams.contracts.catalog import load_catalog
from streams.contracts.records import GuardVerdict, InferenceRequest, InferenceResult
from streams.errors import ConfigurationError
from streams.gateway.dispatch import Blocked, Completed, DispatchError, NoSigningKeyError
from streams.gateway.kafka_dispatch import (
    BLOCKED_TOPIC,
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
    def __init__(self, topic: str, key: bytes | None, value: bytes | None, error: Any = None):
        self._topic, self._key, self._value, self._error = topic, key, value, error

    def topic(self) -> str:
        return self._topic

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


class FakeConsumer:
    def __init__(self) -> None:
        self.assigned: list[TopicPartition] = []
        self.inbox: queue.Queue[FakeMessage] = queue.Queue()
        self.closed = False

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
    def __init__(self, keys_dir: tuple[Path, str]) -> None:
        directory, self.public = keys_dir
        # A prefixed deployment: what is produced names the cluster topic, what is signed the
        # logical one.
        self.catalog = load_catalog(PROJECT_ROOT / "schemas", prefix="prod.")
        self.producer = FakeProducer()
        self.consumer = FakeConsumer()
        self.tokens = Tokens()
        self.dispatcher = KafkaDispatcher(
            self.catalog,
            self.producer,
            self.consumer,
            self.tokens.codec(),
            TenantSigners(directory),
            end_offsets=lambda topics: {TopicPartition(t, 0): 7 for t in topics},
        )

    def reply_with(self, topic: str, record: Any, key: str | None = None) -> None:
        value = self.tokens.encode(record.to_avro())
        request_id = key if key is not None else record.request_id
        physical = self.catalog.physical(topic)
        self.consumer.inbox.put(FakeMessage(physical, request_id.encode(), value))


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


def test_the_outcome_consumer_starts_at_the_end_offsets_of_both_outcome_topics(keys_dir):
    rig = Rig(keys_dir)
    request = _request()
    asyncio.run(_answered(rig, request, lambda: rig.reply_with(RESULTS_TOPIC, _result(request))))
    assigned = {(tp.topic, tp.partition, tp.offset) for tp in rig.consumer.assigned}
    physical = {rig.catalog.physical(t) for t in (RESULTS_TOPIC, BLOCKED_TOPIC)}
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
