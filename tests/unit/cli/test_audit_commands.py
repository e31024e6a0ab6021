"""Operator commands record themselves on the audit trail, or refuse to act without it."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from processors.drift import store
from streams.cli import acl, connect, dlq, drift, main, schemas, tenants
from streams.contracts.registry import SubjectChange
from streams.runtime import kafka
from streams.runtime.dlq_replay import ReplaySummary
from streams.settings import get_settings
from tests.support.audit import Recorded
from tests.support.kafka_acls import FakeAclAdmin


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    auditor = Recorded()
    for module in (schemas, acl, dlq, connect, drift, tenants):
        monkeypatch.setattr(module, "Auditor", auditor)
    return auditor


def _replay(calls: list[str], summary: ReplaySummary) -> Any:
    def replay(*_args: Any, **_kwargs: Any) -> ReplaySummary:
        calls.append("replay")
        return summary

    return replay


def test_a_replay_is_recorded_with_counts_and_never_a_record(monkeypatch, recorded):
    calls: list[str] = []
    summary = ReplaySummary(replayed=2, by_target={"raw.support_tickets": 2}, skipped=1)
    monkeypatch.setattr(dlq, "replay", _replay(calls, summary))
    result = CliRunner().invoke(main, ["dlq", "replay", "raw.support_tickets"])
    assert result.exit_code == 0, result.output
    assert calls == ["replay"]
    [(action, target, outcome, details)] = recorded.events
    assert (action, target, outcome) == ("dlq.replay", "raw.support_tickets.dlq", "ok")
    assert details == {
        "replayed": "2",
        "skipped": "1",
        "foreign": "0",
        "targets": "raw.support_tickets=2",
    }


def test_a_replay_that_cannot_be_audited_sends_nothing(monkeypatch, recorded):
    calls: list[str] = []
    monkeypatch.setattr(dlq, "replay", _replay(calls, ReplaySummary()))
    recorded.unavailable = True
    result = CliRunner().invoke(main, ["dlq", "replay", "raw.support_tickets"])
    assert result.exit_code == 1
    assert "cannot write to the audit topic" in " ".join(result.output.split())
    assert calls == [], "nothing is replayed without an audit trail"


def test_a_dry_run_changes_nothing_and_is_not_recorded(monkeypatch, recorded):
    monkeypatch.setattr(dlq, "replay", _replay([], ReplaySummary(replayed=5)))
    result = CliRunner().invoke(main, ["dlq", "replay", "raw.support_tickets", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert recorded.built == 0 and recorded.events == []


def test_a_failed_replay_is_recorded_as_failed_with_its_error_class(monkeypatch, recorded):
    def broken(*_args: Any, **_kwargs: Any) -> ReplaySummary:
        raise kafka.KafkaException("broker down")

    monkeypatch.setattr(dlq, "replay", broken)
    result = CliRunner().invoke(main, ["dlq", "replay", "raw.support_tickets"])
    assert result.exit_code != 0
    [(action, _, outcome, details)] = recorded.events
    assert (action, outcome) == ("dlq.replay", "failed")
    assert details == {"error_class": "KafkaException"}


def test_schemas_apply_records_itself_once_the_audit_topic_exists(monkeypatch, recorded):
    order: list[str] = []

    def ensure(_admin: Any, specs: list[Any]) -> list[kafka.TopicChange]:
        order.append("topics")
        assert recorded.built == 0, "the auditor is built after the topics exist"
        return [kafka.TopicChange(s.name, "created") for s in specs]

    def register(*_args: Any) -> list[SubjectChange]:
        order.append("subjects")
        return [SubjectChange("audit.events-value", "sluice.v1.AuditEvent", "registered", 1, 9)]

    monkeypatch.setattr(kafka, "admin", lambda _s: FakeAclAdmin(disabled=True))
    monkeypatch.setattr(kafka, "ensure_topics", ensure)
    monkeypatch.setattr(schemas.registry, "apply", register)
    result = CliRunner().invoke(main, ["schemas", "apply"])
    assert result.exit_code == 0, result.output
    assert order == ["topics", "subjects"] and recorded.built == 1
    [(action, _, outcome, details)] = recorded.events
    assert (action, outcome) == ("schemas.apply", "ok")
    assert int(details["topics.created"]) > 10
    assert details["subjects.registered"] == "1"
    assert "registry" in details
    assert details["acls"] == "no authorizer"


def test_schemas_apply_that_cannot_create_topics_is_recorded_as_failed(monkeypatch, recorded):
    def ensure(_admin: Any, specs: list[Any]) -> list[kafka.TopicChange]:
        return [kafka.TopicChange(s.name, "error", "not authorized") for s in specs]

    monkeypatch.setattr(kafka, "admin", lambda _s: object())
    monkeypatch.setattr(kafka, "ensure_topics", ensure)
    result = CliRunner().invoke(main, ["schemas", "apply"])
    assert result.exit_code == 1
    [(action, _, outcome, details)] = recorded.events
    assert (action, outcome) == ("schemas.apply", "failed")
    assert details["error_class"] == "SystemExit" and "topics.error" in details


class _Connect:
    shown_url = "http://127.0.0.1:8083"

    def apply(self, _connector: Any) -> bool:
        return True

    def delete(self, _name: str) -> None:
        return None


def test_connect_apply_records_the_names_of_variables_never_their_values(
    monkeypatch, recorded, tmp_path
):
    monkeypatch.setattr(connect.ConnectClient, "from_settings", lambda _s: _Connect())
    config = tmp_path / "db.json"
    config.write_text(
        '{"name": "db", "config": {"connector.class": "FileStreamSource", '
        '"database.password": "${SLUICE_DB_PASSWORD}"}}'
    )
    result = CliRunner().invoke(
        main,
        [
            "connect",
            "apply",
            str(config),
            "--no-wait",
            "--var",
            "SLUICE_DB_PASSWORD=hunter2",
            "--set",
            "tasks.max=1",
        ],
    )
    assert result.exit_code == 0, result.output
    [(action, target, outcome, details)] = recorded.events
    assert (action, target, outcome) == ("connect.apply", "db", "ok")
    assert details["vars"] == "SLUICE_DB_PASSWORD" and details["set"] == "tasks.max"
    assert details["change"] == "created"
    assert "hunter2" not in repr(recorded.events)


def test_connect_delete_is_recorded(monkeypatch, recorded):
    monkeypatch.setattr(connect.ConnectClient, "from_settings", lambda _s: _Connect())
    result = CliRunner().invoke(main, ["connect", "delete", "db"])
    assert result.exit_code == 0, result.output
    assert recorded.events == [("connect.delete", "db", "ok", {"worker": "http://127.0.0.1:8083"})]


class _Tombstones:
    def __init__(self) -> None:
        self.keys: list[str] = []

    def produce(self, _topic: str, _value: None, key: str) -> None:
        self.keys.append(key)

    def flush(self, _timeout: float) -> int:
        return 0


def test_drift_reset_is_recorded_with_the_signals_it_reset(monkeypatch, recorded):
    producer = _Tombstones()
    monkeypatch.setattr(store, "read_latest", lambda *_a: {"model:a:x": {}, "dataset:b:y": {}})
    monkeypatch.setattr(drift.kafka, "producer", lambda _s: producer)
    result = CliRunner().invoke(main, ["drift", "reset", "--signal", "model:", "--yes"])
    assert result.exit_code == 0, result.output
    assert producer.keys == ["model:a:x"]
    assert recorded.events == [
        ("drift.reset", "model:", "ok", {"signals": "1", "unacknowledged": "0"})
    ]


@pytest.fixture
def state_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def test_registering_and_rotating_a_tenant_are_recorded_with_key_ids_only(state_dir, recorded):
    runner = CliRunner()
    assert runner.invoke(main, ["tenants", "add", "initech"]).exit_code == 0
    assert runner.invoke(main, ["tenants", "rotate", "initech"]).exit_code == 0
    assert runner.invoke(main, ["tenants", "rotate", "initech", "--retire"]).exit_code == 0
    actions = [(action, target, outcome) for action, target, outcome, _ in recorded.events]
    assert actions == [
        ("tenants.add", "initech", "ok"),
        ("tenants.rotate", "initech", "ok"),
        ("tenants.retire", "initech", "ok"),
    ]
    assert recorded.events[0][3] == {"registered": "True"}
    rotated_ids = recorded.events[1][3]["key_ids"].split()
    assert len(rotated_ids) == 2 and recorded.events[2][3]["key_ids"] == rotated_ids[0]
    private = (state_dir / "secrets" / "tenants" / "initech.key").read_text().strip()
    assert private not in str(recorded.events)


def test_a_tenant_that_cannot_be_audited_is_not_registered(state_dir, recorded):
    recorded.unavailable = True
    result = CliRunner().invoke(main, ["tenants", "add", "initech"])
    assert result.exit_code == 1
    assert "cannot write to the audit topic" in " ".join(result.output.split())
    assert not (state_dir / "secrets" / "tenants.yaml").exists()
