"""``sluice acl apply|show`` and the ACL step of ``sluice schemas apply``, on a fake admin."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import acl, main, schemas
from streams.contracts.acls import AclNames, Grant, load_acls
from streams.contracts.catalog import catalog_for
from streams.contracts.registry import SubjectChange
from streams.runtime import kafka
from streams.runtime.acls import binding_of, existing_grants
from streams.settings import get_settings
from tests.support.audit import Recorded
from tests.support.kafka_acls import FakeAclAdmin

STRAY = Grant("User:tenant-acme", "TOPIC", "inference.requests.safe", "LITERAL", "WRITE")
FOREIGN = Grant("User:alice", "TOPIC", "inference.requests.safe", "LITERAL", "READ")


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    auditor = Recorded()
    for module in (acl, schemas):
        monkeypatch.setattr(module, "Auditor", auditor)
    return auditor


@pytest.fixture
def admin(monkeypatch: pytest.MonkeyPatch) -> FakeAclAdmin:
    fake = FakeAclAdmin()
    monkeypatch.setattr(kafka, "admin", lambda _settings: fake)
    return fake


def _declared() -> set[Grant]:
    settings = get_settings()
    catalog = catalog_for(settings)
    return set(load_acls(settings.schemas_dir, catalog).grants(catalog, AclNames.of(settings)))


def _invoke(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args))
    return result, " ".join(result.output.split())


def test_apply_creates_the_declared_bindings_and_records_it(admin, recorded):
    result, output = _invoke("acl", "apply")
    assert result.exit_code == 0, output
    assert set(existing_grants(admin)) == _declared()
    [(action, _, outcome, details)] = recorded.events
    assert (action, outcome) == ("acl.apply", "ok")
    assert details["bindings.created"] == str(len(_declared()))
    assert details["bindings.deleted"] == "0"


def test_a_second_apply_changes_nothing(admin, recorded):
    assert _invoke("acl", "apply")[0].exit_code == 0
    calls = len(admin.calls)
    result, output = _invoke("acl", "apply")
    assert result.exit_code == 0 and "up to date" in output
    assert admin.calls[calls:] == ["describe"], "nothing created or deleted"
    assert recorded.events[-1][3]["bindings.created"] == "0"


def test_apply_removes_a_managed_principals_stray_binding_and_keeps_foreign_ones(admin, recorded):
    admin.bindings += [binding_of(STRAY), binding_of(FOREIGN)]
    result, output = _invoke("acl", "apply")
    assert result.exit_code == 0, output
    have = set(existing_grants(admin))
    assert STRAY not in have and FOREIGN in have
    assert recorded.events[-1][3]["bindings.deleted"] == "1"


def test_a_dry_run_prints_the_diff_changes_nothing_and_is_not_recorded(admin, recorded):
    admin.bindings.append(binding_of(STRAY))
    result, output = _invoke("acl", "apply", "--dry-run")
    assert result.exit_code == 0, output
    assert "dry run: nothing changed" in output
    assert f"{len(_declared())} to create, 1 to delete, 0 unchanged" in output
    assert "User:tenant-acme" in output and "delete" in output and "create" in output
    assert admin.calls == ["describe"]
    assert recorded.built == 0 and recorded.events == []


def test_an_apply_that_cannot_be_audited_changes_nothing(admin, recorded):
    recorded.unavailable = True
    result, output = _invoke("acl", "apply")
    assert result.exit_code == 1
    assert "cannot write to the audit topic" in output
    assert admin.bindings == [] and admin.calls == ["describe"]


def test_a_binding_the_broker_refuses_fails_the_apply_and_is_recorded_as_failed(admin, recorded):
    admin.refuse.add("inference.requests.safe")
    result, output = _invoke("acl", "apply")
    assert result.exit_code == 1
    assert "refused by the test" in output
    [(action, _, outcome, details)] = recorded.events
    assert (action, outcome) == ("acl.apply", "failed")
    refused = [g for g in _declared() if g.name == "inference.requests.safe"]
    assert details["bindings.failed"] == str(len(refused))
    assert details["bindings.created"] == str(len(_declared()) - len(refused))


@pytest.mark.parametrize("command", [["acl", "apply"], ["acl", "show"]])
def test_a_broker_without_an_authorizer_is_a_warning_not_an_error(monkeypatch, recorded, command):
    monkeypatch.setattr(kafka, "admin", lambda _settings: FakeAclAdmin(disabled=True))
    result, output = _invoke(*command)
    assert result.exit_code == 0, output
    assert "warning" in output and "no authorizer" in output and "plaintext" in output
    assert recorded.events == []


def test_show_lists_bindings_per_principal_with_their_status(admin, recorded):
    assert _invoke("acl", "apply")[0].exit_code == 0
    admin.bindings += [binding_of(STRAY), binding_of(FOREIGN)]
    result, output = _invoke("acl", "show", "--principal", "tenant-acme")
    assert result.exit_code == 0, output
    assert "User:tenant-acme" in output and "User:sluice-guard" not in output
    assert "undeclared" in output and "declared" in output
    result, output = _invoke("acl", "show")
    assert "User:sluice-guard" in output and "User:alice" not in output
    result, output = _invoke("acl", "show", "--all")
    assert "User:alice" in output and "unmanaged" in output


def _no_topics_or_schemas(monkeypatch: pytest.MonkeyPatch) -> None:
    def ensure(_admin: Any, specs: list[Any]) -> list[kafka.TopicChange]:
        return [kafka.TopicChange(s.name, "exists") for s in specs]

    def register(*_args: Any) -> list[SubjectChange]:
        return []

    monkeypatch.setattr(kafka, "ensure_topics", ensure)
    monkeypatch.setattr(schemas.registry, "apply", register)


def test_schemas_apply_applies_the_acls_once_the_topics_exist(monkeypatch, admin, recorded):
    _no_topics_or_schemas(monkeypatch)
    result, output = _invoke("schemas", "apply")
    assert result.exit_code == 0, output
    assert set(existing_grants(admin)) == _declared()
    assert [e[0] for e in recorded.events] == ["acl.apply", "schemas.apply"]
    assert recorded.events[-1][3]["acls"] == "applied"


def test_schemas_apply_no_acls_leaves_them_alone(monkeypatch, admin, recorded):
    _no_topics_or_schemas(monkeypatch)
    result, output = _invoke("schemas", "apply", "--no-acls")
    assert result.exit_code == 0, output
    assert admin.calls == []
    [(action, _, _, details)] = recorded.events
    assert action == "schemas.apply" and details["acls"] == "skipped"


def test_apply_without_a_table_prints_only_the_counts(admin, recorded, capsys):
    """What the demo shows: one line, not a row per binding."""
    admin.bindings.append(binding_of(STRAY))
    settings = get_settings()
    applied = acl.apply_declared(settings, catalog_for(settings), recorded, table=False)
    assert applied is not None and applied.delete == [STRAY]
    output = " ".join(capsys.readouterr().out.split())
    assert f"{len(_declared())} to create, 1 to delete, 0 unchanged" in output
    assert "tenant-acme" not in output and "ACL changes" not in output
    assert set(existing_grants(admin)) == _declared()
