"""Where a replay may send a dead letter: the header never decides, the DLQ or the operator does.

Anyone who can write to ``X.dlq`` can write a ``sluice.error.topic`` header naming
``inference.requests.safe``; a replay that trusted it would put unguarded prompts
past guard. ``X.dlq`` goes back to ``X`` only, unless the operator names a catalog
topic with ``--to``.
"""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streams.contracts.catalog import load_catalog
from streams.runtime.dead_letters import REPLAY_COUNT, DlqInfo
from streams.runtime.dlq_replay import (
    ReplaySummary,
    ReplayTarget,
    ReplayTargetError,
    _committed,
    _replay_chunk,
    replay_target,
)
from streams.runtime.sealing import DeadLetterKeyError, Keyring, SealedPayloadError, new_key
from streams.runtime.spec import InputRecord
from streams.settings import PROJECT_ROOT
from tests.unit.runtime.test_sealing import ring

CATALOG = load_catalog(PROJECT_ROOT / "schemas")
PREFIXED = load_catalog(PROJECT_ROOT / "schemas", prefix="staging.")


def info(topic: str) -> DlqInfo:
    return DlqInfo("validate", "contract", "ContractViolation", "m", topic, 0, 1, 0)


def test_a_dlq_is_replayed_into_the_topic_it_belongs_to_only():
    target = replay_target(CATALOG, "raw.support_tickets.dlq")
    assert target == ReplayTarget("raw.support_tickets", explicit=False)
    assert target.destination(info("raw.support_tickets")) == "raw.support_tickets"


@pytest.mark.parametrize(
    "forged",
    [
        "inference.requests.safe",  # past guard
        "inference.requests",
        "raw.support_tickets.dlq",
        "staging.raw.support_tickets",  # another environment's copy
        "raw.support_tickets ",
        "",
    ],
)
def test_a_forged_header_never_chooses_the_destination(forged):
    assert replay_target(CATALOG, "raw.support_tickets.dlq").destination(info(forged)) is None


def test_the_topic_prefix_is_the_dead_letter_topics():
    target = replay_target(PREFIXED, PREFIXED.physical("raw.support_tickets.dlq"))
    assert target.topic == "staging.raw.support_tickets"
    # What the runner writes on a prefixed cluster: the cluster name of the input.
    assert target.destination(info("staging.raw.support_tickets")) == target.topic
    assert target.destination(info("raw.support_tickets")) is None


def test_a_name_that_is_not_a_dead_letter_topic_is_refused():
    for name in ("raw.support_tickets", ".dlq", "inference.requests.safe"):
        with pytest.raises(ReplayTargetError, match="not a dead-letter topic"):
            replay_target(CATALOG, name)


def test_to_sends_every_record_to_a_catalog_topic_the_operator_names():
    target = replay_target(CATALOG, "raw.support_tickets.dlq", to="inference.requests")
    assert target == ReplayTarget("inference.requests", explicit=True)
    for named in ("raw.support_tickets", "inference.requests.safe", ""):
        assert target.destination(info(named)) == "inference.requests"


def test_to_takes_the_logical_or_the_cluster_name_under_a_prefix():
    dlq = PREFIXED.physical("raw.support_tickets.dlq")
    for to in ("inference.requests", "staging.inference.requests"):
        target = replay_target(PREFIXED, dlq, to=to)
        assert target.topic == "staging.inference.requests"
        assert target.explicit


@pytest.mark.parametrize(
    "to",
    ["not.a.topic", "staging.inference.requests", "prod.inference.requests", "inference.*", ""],
)
def test_to_a_topic_outside_the_catalog_is_refused_with_the_known_topics(to):
    with pytest.raises(ReplayTargetError, match="is not a topic of the catalog") as refused:
        replay_target(CATALOG, "raw.support_tickets.dlq", to=to)
    assert "inference.requests" in str(refused.value)
    assert ".dlq" not in str(refused.value).split("catalog topics:")[1]


def test_to_a_dead_letter_topic_is_refused():
    with pytest.raises(ReplayTargetError, match="dead-letter topic, not a replay target"):
        replay_target(CATALOG, "raw.support_tickets.dlq", to="inference.requests.dlq")


# -- one chunk of a replay, with the Kafka clients faked -----------------------------------
class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list]] = []
        self.offsets: list = []
        self.committed = 0

    def begin_transaction(self) -> None:
        pass

    def produce(self, topic, value=None, key=None, headers=None) -> None:
        self.sent.append((topic, value, key, headers))

    def send_offsets_to_transaction(self, offsets, metadata, timeout) -> None:
        self.offsets += offsets

    def commit_transaction(self, timeout) -> None:
        self.committed += 1


class FakeConsumer:
    def consumer_group_metadata(self) -> object:
        return object()


def letter(offset: int, topic: str | None, replays: int = 0) -> InputRecord:
    headers: list[tuple[str, bytes]] = [("traceparent", b"00-ab-cd-01")]
    if topic is not None:
        headers.append(("sluice.error.topic", topic.encode()))
        headers.append(("sluice.error.class", b"ContractViolation"))
    if replays:
        headers.append((REPLAY_COUNT, str(replays).encode()))
    raw = f"record {offset}".encode()
    return InputRecord("raw.t.dlq", 0, offset, b"k", raw, raw, headers, 0)


def test_a_chunk_sends_only_its_own_topics_records_and_commits_past_the_rest():
    chunk = [
        letter(0, "raw.t"),
        letter(1, "inference.requests.safe"),
        letter(2, None),
        letter(3, "raw.t", replays=2),
        letter(4, "inference.requests.safe"),
    ]
    producer, summary = FakeProducer(), ReplaySummary()
    _replay_chunk(chunk, ReplayTarget("raw.t"), producer, FakeConsumer(), summary)
    assert [(t, v) for t, v, _, _ in producer.sent] == [
        ("raw.t", b"record 0"),
        ("raw.t", b"record 3"),
    ]
    assert summary.replayed == 2 and summary.by_target == {"raw.t": 2}
    assert summary.skipped == 1
    assert summary.foreign == {"inference.requests.safe": 2}
    # The replay count goes on, error headers are stripped, and the whole chunk is done.
    headers = [dict(h) for _, _, _, h in producer.sent]
    assert [h[REPLAY_COUNT] for h in headers] == [b"1", b"3"]
    assert all(not any(k.startswith("sluice.error.") for k in h) for h in headers)
    assert [(tp.partition, tp.offset) for tp in producer.offsets] == [(0, 5)]
    assert producer.committed == 1


def test_a_chunk_with_an_explicit_target_sends_every_record_there():
    chunk = [letter(0, "raw.t"), letter(1, "inference.requests.safe"), letter(2, None)]
    producer, summary = FakeProducer(), ReplaySummary()
    target = ReplayTarget("inference.requests", explicit=True)
    _replay_chunk(chunk, target, producer, FakeConsumer(), summary)
    assert [t for t, _, _, _ in producer.sent] == ["inference.requests"] * 3
    assert (summary.replayed, summary.skipped, summary.foreign) == (3, 0, {})


def test_a_dry_run_counts_the_same_and_sends_nothing():
    chunk = [letter(0, "raw.t"), letter(1, "inference.requests.safe")]
    summary = ReplaySummary()
    _replay_chunk(chunk, ReplayTarget("raw.t"), None, FakeConsumer(), summary)
    assert (summary.replayed, summary.foreign) == (1, {"inference.requests.safe": 1})


# -- encrypted dead letters ------------------------------------------------------------------
def sealed_letter(offset: int, keys: Keyring, original: bytes) -> InputRecord:
    sealed, sealing = keys.seal(original)
    headers = [("sluice.error.topic", b"inference.requests"), *sealing]
    return InputRecord("inference.requests.dlq", 0, offset, b"k", sealed, sealed, headers, 0)


def test_an_encrypted_dead_letter_is_replayed_as_the_original_bytes():
    keys = ring(new_key())
    chunk = [sealed_letter(0, keys, b"\x00prompt one"), sealed_letter(1, keys, b"\x00prompt two")]
    producer, summary = FakeProducer(), ReplaySummary()
    _replay_chunk(
        chunk, ReplayTarget("inference.requests"), producer, FakeConsumer(), summary, keyring=keys
    )
    assert [v for _, v, _, _ in producer.sent] == [b"\x00prompt one", b"\x00prompt two"]
    # The encryption headers describe the dead letter's value, not the original's.
    assert all(not any(k.startswith("sluice.dlq.") for k, _ in h) for _, _, _, h in producer.sent)


def test_a_replay_without_the_key_sends_nothing_and_names_the_setting():
    chunk = [letter(0, "inference.requests"), sealed_letter(1, ring(new_key()), b"\x00p")]
    producer, summary = FakeProducer(), ReplaySummary()
    with pytest.raises(DeadLetterKeyError, match="SLUICE_DEAD_LETTERS__ENCRYPTION_KEY"):
        _replay_chunk(chunk, ReplayTarget("inference.requests"), producer, FakeConsumer(), summary)
    assert producer.sent == [] and producer.offsets == [] and summary.replayed == 0


def test_a_replay_with_another_key_or_altered_bytes_sends_nothing():
    record = sealed_letter(0, ring(new_key()), b"\x00p")
    producer = FakeProducer()
    with pytest.raises(DeadLetterKeyError, match="encrypted with key"):
        _replay_chunk(
            [record],
            ReplayTarget("inference.requests"),
            producer,
            FakeConsumer(),
            ReplaySummary(),
            keyring=ring(new_key()),
        )
    keys = ring(new_key())
    good = sealed_letter(0, keys, b"\x00p")
    assert good.raw is not None
    flipped = good.raw[:-1] + bytes([good.raw[-1] ^ 1])
    altered = InputRecord(good.topic, 0, 0, b"k", flipped, flipped, good.headers, 0)
    with pytest.raises(SealedPayloadError):
        _replay_chunk(
            [altered],
            ReplayTarget("inference.requests"),
            producer,
            FakeConsumer(),
            ReplaySummary(),
            keyring=keys,
        )
    assert producer.sent == []


class _CoordinatorStartingConsumer:
    """Fails the first lookups as a broker that is still loading __consumer_offsets."""

    def __init__(self, failures: int, code: int) -> None:
        self.failures, self.code, self.calls = failures, code, 0

    def committed(self, partitions: list[Any], timeout: float) -> list[Any]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(self.code))
        return partitions


def test_committed_offsets_wait_for_a_coordinator_that_is_not_ready() -> None:
    consumer = _CoordinatorStartingConsumer(2, KafkaError.NOT_COORDINATOR)
    wanted = [TopicPartition("t", 0)]
    assert _committed(consumer, wanted, 30) == wanted  # type: ignore[arg-type]
    assert consumer.calls == 3


def test_committed_offsets_raise_other_errors_at_once() -> None:
    consumer = _CoordinatorStartingConsumer(1, KafkaError.GROUP_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaException):
        _committed(consumer, [TopicPartition("t", 0)], 30)  # type: ignore[arg-type]
    assert consumer.calls == 1
