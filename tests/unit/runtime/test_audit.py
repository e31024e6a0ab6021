"""The audit trail: one AuditEvent per operator action, written before the command reports."""

from __future__ import annotations

from typing import Any

import pytest

from streams.contracts.catalog import load_catalog
from streams.contracts.records import AuditEvent
from streams.contracts.serde import AvroSerde
from streams.runtime import audit, kafka
from streams.runtime.audit import (
    AUDIT_TOPIC,
    MAX_DETAIL_CHARS,
    Auditor,
    AuditUnavailableError,
    audited,
    clean_details,
)
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT, Settings

CATALOG = load_catalog(PROJECT_ROOT / "schemas", prefix="t1.")


class FakeProducer:
    """Records what is produced; ``flush`` delivers it, or fails it with ``error``."""

    def __init__(self, error: str | None = None) -> None:
        self.sent: list[tuple[str, bytes, str]] = []
        self.pending: list[Any] = []
        self.error = error

    def produce(self, topic: str, value: bytes, key: str, on_delivery: Any) -> None:
        self.sent.append((topic, value, key))
        self.pending.append(on_delivery)

    def flush(self, _timeout: float) -> int:
        error = _Error(self.error) if self.error else None
        for callback in self.pending:
            callback(error, None)
        self.pending.clear()
        return 0


class _Error:
    def __init__(self, text: str) -> None:
        self.text = text

    def str(self) -> str:
        return self.text


@pytest.fixture
def serde() -> AvroSerde:
    registry = MemoryRegistry()
    spec = CATALOG.topic(AUDIT_TOPIC)
    registry.register(spec.subject, CATALOG.value_schema(AUDIT_TOPIC).document)
    return AvroSerde(registry, CATALOG)


def auditor(serde: AvroSerde, producer: FakeProducer, settings: Settings | None = None) -> Auditor:
    return Auditor(
        settings or Settings(),
        CATALOG,
        producer=producer,
        encode=serde.encoder(AUDIT_TOPIC),
    )


def events(serde: AvroSerde, producer: FakeProducer) -> list[AuditEvent]:
    schema = CATALOG.value_schema(AUDIT_TOPIC)
    return [
        AuditEvent.from_avro(serde.decode(value, schema, topic=AUDIT_TOPIC))
        for _, value, _ in producer.sent
    ]


def test_the_audit_topic_is_append_only_of_the_audit_class_and_kept_a_year():
    spec = CATALOG.topic(AUDIT_TOPIC)
    assert spec.name == "t1.audit.events"
    assert spec.value == "sluice.v1.AuditEvent"
    assert spec.data_class == "audit"
    assert spec.configs["cleanup.policy"] == "delete"
    days = CATALOG.data_class("audit").clickhouse_ttl_days
    assert days is not None
    assert int(spec.configs["retention.ms"]) >= days * 86_400_000
    assert spec.dlq_topic == "audit.events.dlq"  # read by the sink


def test_an_event_is_produced_in_the_wire_format_keyed_by_action_and_flushed(serde):
    producer = FakeProducer()
    written = auditor(serde, producer).record(
        "dlq.replay", "t1.raw.support_tickets.dlq", "ok", {"replayed": 3, "skipped": 0}
    )
    [(topic, value, key)] = producer.sent
    assert topic == "t1.audit.events" and key == "dlq.replay"
    assert value[0] == 0  # Confluent magic byte, then the registered schema id
    assert not producer.pending, "the event is acknowledged before record() returns"
    [read] = events(serde, producer)
    assert read == written
    assert read.action == "dlq.replay" and read.outcome == "ok"
    assert read.target == "t1.raw.support_tickets.dlq"
    assert read.details == {"replayed": "3", "skipped": "0"}
    assert read.host and read.actor and read.sluice_version
    assert read.occurred_at.tzinfo is not None


def test_the_actor_is_the_os_user_and_the_sasl_user_when_configured(monkeypatch):
    monkeypatch.setattr(audit.getpass, "getuser", lambda: "ops")
    assert audit.actor(Settings()) == "ops"
    sasl = Settings.model_validate({"kafka": {"options": {"sasl.username": "sluice-admin"}}})
    assert audit.actor(sasl) == "ops/sluice-admin"


def test_the_actor_without_a_login_name_is_the_uid(monkeypatch):
    def no_user() -> str:
        raise OSError("no login name")

    monkeypatch.setattr(audit.getpass, "getuser", no_user)
    assert audit.actor(Settings()).startswith("uid:")


def test_details_never_carry_secrets_or_long_text():
    cleaned = clean_details(
        {
            "sasl_password": "hunter2",
            "api_key": "sk-live-123",
            "token": "t",
            "registry": "https://admin:hunter2@registry.example:8081/apis/ccompat/v7",
            "reason": "x" * 5000,
            "count": 7,
        }
    )
    assert cleaned["sasl_password"] == cleaned["api_key"] == cleaned["token"] == "***"
    assert cleaned["registry"] == "https://admin:***@registry.example:8081/apis/ccompat/v7"
    assert len(cleaned["reason"]) == MAX_DETAIL_CHARS
    assert cleaned["count"] == "7"
    assert "hunter2" not in repr(cleaned) and "sk-live" not in repr(cleaned)


@pytest.mark.parametrize("key", ["Payload Text", "", "x" * 100, "a\nb"])
def test_a_detail_key_that_is_not_an_identifier_is_refused(key):
    with pytest.raises(ValueError, match="identifier"):
        clean_details({key: "v"})


def test_an_unknown_action_is_refused(serde):
    with pytest.raises(ValueError, match="unknown audit action"):
        auditor(serde, FakeProducer()).record("tenant.delete", "acme", "ok")


def test_a_target_url_loses_its_password(serde):
    producer = FakeProducer()
    auditor(serde, producer).record("schemas.apply", "https://u:pw@host/x", "ok")
    assert events(serde, producer)[0].target == "https://u:***@host/x"


def test_an_event_kafka_does_not_acknowledge_fails_the_command(serde):
    producer = FakeProducer(error="Broker: Topic authorization failed")
    ended = r"dlq\.replay of t1\.x\.dlq ended ok"
    with pytest.raises(AuditUnavailableError, match=ended) as caught:
        auditor(serde, producer).record("dlq.replay", "t1.x.dlq", "ok")
    assert "Topic authorization failed" in str(caught.value)
    assert "not on the audit trail" in str(caught.value)


def test_an_action_is_refused_before_it_starts_when_the_topic_is_missing(monkeypatch, serde):
    monkeypatch.setattr(kafka, "registry", lambda _s: serde.registry)
    monkeypatch.setattr(kafka, "admin", lambda _s: object())
    monkeypatch.setattr(kafka, "missing_topics", lambda _c, topics, _t: list(topics))
    with pytest.raises(AuditUnavailableError, match="does not exist; run `sluice schemas apply`"):
        Auditor(Settings(), CATALOG)


def test_an_action_is_refused_before_it_starts_when_the_schema_is_not_registered(monkeypatch):
    monkeypatch.setattr(kafka, "registry", lambda _s: MemoryRegistry())
    with pytest.raises(AuditUnavailableError, match="cannot write to the audit topic") as caught:
        Auditor(Settings(), CATALOG)
    assert "SchemaNotRegisteredError" in str(caught.value)
    assert "refused while they cannot be audited" in str(caught.value)


def test_audited_records_ok_with_the_details_the_block_filled(serde):
    producer = FakeProducer()
    with audited(auditor(serde, producer), "connect.apply", "tickets-file") as details:
        details["change"] = "created"
    [event] = events(serde, producer)
    assert (event.action, event.target, event.outcome) == ("connect.apply", "tickets-file", "ok")
    assert event.details == {"change": "created"}


@pytest.mark.parametrize(
    ("error", "error_class"),
    [(RuntimeError("boom: payload {secret}"), "RuntimeError"), (SystemExit(1), "SystemExit")],
)
def test_audited_records_a_failure_with_the_error_class_only(serde, error, error_class):
    producer = FakeProducer()
    with pytest.raises(type(error)), audited(auditor(serde, producer), "connect.delete", "c1"):
        raise error
    [event] = events(serde, producer)
    assert event.outcome == "failed"
    assert event.details == {"error_class": error_class}


def test_a_clean_exit_is_recorded_as_ok(serde):
    producer = FakeProducer()
    with pytest.raises(SystemExit), audited(auditor(serde, producer), "drift.reset", "*"):
        raise SystemExit(0)
    assert events(serde, producer)[0].outcome == "ok"


def test_an_auditor_made_after_the_action_is_built_only_once_it_ran(serde):
    producer = FakeProducer()
    order: list[str] = []

    def late() -> Auditor:
        order.append("auditor")
        return auditor(serde, producer)

    with audited(late, "schemas.apply", "127.0.0.1:9092"):
        order.append("action")
    assert order == ["action", "auditor"]
    assert events(serde, producer)[0].outcome == "ok"


def test_a_success_that_cannot_be_audited_fails(serde):
    producer = FakeProducer(error="Local: Message timed out")
    with pytest.raises(AuditUnavailableError), audited(auditor(serde, producer), "drift.reset", ""):
        pass


def test_a_failure_that_cannot_be_audited_keeps_its_own_error_and_says_so(serde):
    producer = FakeProducer(error="Local: Message timed out")
    with (
        pytest.raises(KeyError) as caught,
        audited(auditor(serde, producer), "dlq.replay", "t1.x.dlq"),
    ):
        raise KeyError("x")
    assert any("could not be written" in note for note in caught.value.__notes__)


def test_an_unknown_action_is_refused_before_the_action_runs() -> None:
    from tests.support.audit import Recorded

    ran: list[str] = []
    with (
        pytest.raises(ValueError, match="unknown audit action"),
        audited(Recorded(), "tenants.delete", "acme"),
    ):
        ran.append("acted")
    assert ran == []
