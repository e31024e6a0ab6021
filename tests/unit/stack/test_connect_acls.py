"""``sluice up`` grants the Connect worker its own topics and group before starting it."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.contracts.acls import Grant
from streams.runtime.acls import binding_of, existing_grants
from streams.settings import Settings, StackSettings
from streams.stack import Stack, kafka_security
from streams.stack.components import ComponentError
from streams.stack.connect_acls import connect_worker_grants, ensure_connect_worker_acls
from streams.stack.connect_worker import Connect
from tests.support.kafka_acls import FakeAclAdmin

WORKER = "User:sluice-connect"
STRAY = Grant(WORKER, "TOPIC", "inference.requests.safe", "LITERAL", "WRITE")


def settings_in(tmp_path: Path, **stack: object) -> Settings:
    settings = Settings(stack=StackSettings(state_dir=tmp_path, **stack))  # type: ignore[arg-type]
    kafka_security.ensure_kafka_secrets(settings)
    return settings


def test_the_worker_gets_its_group_transactional_ids_and_internal_topics_only(
    tmp_path: Path,
) -> None:
    grants = connect_worker_grants(settings_in(tmp_path, connect_group_id="cg"))
    assert {g.principal for g in grants} == {WORKER}
    assert Grant(WORKER, "GROUP", "cg", "LITERAL", "READ") in grants
    assert Grant(WORKER, "TRANSACTIONAL_ID", "connect-cluster-cg", "LITERAL", "WRITE") in grants
    assert Grant(WORKER, "TRANSACTIONAL_ID", "cg-", "PREFIXED", "WRITE") in grants
    internal = {g.operation for g in grants if g.name == "_cg-" and g.pattern == "PREFIXED"}
    assert internal == {"CREATE", "READ", "WRITE", "DESCRIBE_CONFIGS"}
    # The topics its connectors write come with `sluice schemas apply`, with every other.
    assert not [g for g in grants if g.resource == "TOPIC" and not g.name.startswith("_cg-")]


def test_missing_bindings_are_created_once_and_nothing_is_deleted(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    admin = FakeAclAdmin([binding_of(STRAY)])
    made = ensure_connect_worker_acls(settings, admin)
    assert sorted(made) == connect_worker_grants(settings)
    assert set(existing_grants(admin)) == {*made, STRAY}, "apply, not up, revokes bindings"
    assert ensure_connect_worker_acls(settings, admin) == []
    assert "delete" not in admin.calls


def test_a_binding_the_broker_refuses_stops_the_start_with_what_to_do(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    admin = FakeAclAdmin()
    admin.refuse = {"sluice-connect"}
    with pytest.raises(ComponentError, match="run `sluice up` again"):
        ensure_connect_worker_acls(settings, admin)


def test_a_broker_without_an_authorizer_is_named(tmp_path: Path) -> None:
    with pytest.raises(ComponentError, match="no authorizer"):
        ensure_connect_worker_acls(settings_in(tmp_path), FakeAclAdmin(disabled=True))


@pytest.mark.parametrize("own_principal", [True, False])
def test_before_start_grants_only_a_worker_that_logs_in_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, own_principal: bool
) -> None:
    admin = FakeAclAdmin()
    monkeypatch.setattr("confluent_kafka.admin.AdminClient", lambda _config: admin)
    reports: list[str] = []
    Connect(settings_in(tmp_path, processor_principals=own_principal)).before_start(reports.append)
    assert bool(admin.bindings) is own_principal
    assert bool(reports) is own_principal


def test_up_grants_the_worker_before_it_starts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: list[str] = []
    component = Connect(settings_in(tmp_path))
    monkeypatch.setattr(component, "fetch", lambda _progress: steps.append("fetch"))
    monkeypatch.setattr(component, "prepare", lambda: steps.append("prepare"))
    monkeypatch.setattr(component, "before_start", lambda _report: steps.append("grant"))
    monkeypatch.setattr(component, "command", lambda: ["connect"])
    monkeypatch.setattr(component, "probe", lambda: "healthy")
    process = type(component.process)  # a frozen dataclass: patched on its class
    monkeypatch.setattr(process, "is_running", lambda _self: steps[-1:] == ["start"])
    monkeypatch.setattr(process, "start", lambda _self, *_a, **_k: steps.append("start"))
    stack = Stack(component.settings, only=[])
    stack.components = [component]
    stack.up(lambda _line: None)
    assert steps == ["fetch", "prepare", "grant", "start"]
