"""``sluice keys``: keys for registered tenants only, shown once, recorded on the audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import keys, main
from streams.gateway.keys import parse_key
from streams.settings import get_settings
from streams.stack.tenant_keys import add_tenant
from tests.support.audit import Recorded


@pytest.fixture
def state_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # tables on one line each
    get_settings.cache_clear()
    add_tenant(get_settings(), "acme")
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    auditor = Recorded()
    monkeypatch.setattr(keys, "Auditor", auditor)
    return auditor


def _create(*args: str) -> Any:
    return CliRunner().invoke(main, ["keys", "create", *args])


def test_create_prints_the_key_once_stores_only_its_hash_and_is_recorded(state_dir, recorded):
    result = _create("--tenant", "acme", "--user", "svc-1", "--priority", "high", "--name", "ci")
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    parsed = parse_key(key)
    assert parsed is not None
    registry_text = (state_dir / "secrets" / "api-keys.yaml").read_text()
    assert parsed.secret not in registry_text and parsed.key_id in registry_text
    [(action, target, outcome, details)] = recorded.events
    assert (action, target, outcome) == ("keys.create", "acme", "ok")
    assert details == {"key_id": parsed.key_id, "priority": "high", "with_user": "True"}
    assert parsed.secret not in str(recorded.events)
    listed = CliRunner().invoke(main, ["keys", "list"])
    assert parsed.key_id in listed.output and "svc-1" in listed.output
    assert parsed.secret not in listed.output and "live" in listed.output


def test_a_key_for_an_unregistered_tenant_is_refused_and_recorded_as_failed(state_dir, recorded):
    result = _create("--tenant", "nobody")
    assert result.exit_code == 1
    assert "sluice tenants add nobody" in " ".join(result.output.split())
    assert not (state_dir / "secrets" / "api-keys.yaml").exists()
    [(action, _target, outcome, details)] = recorded.events
    assert (action, outcome, details) == ("keys.create", "failed", {"error_class": "ApiKeyError"})


def test_no_key_is_made_without_an_audit_trail(state_dir, recorded):
    recorded.unavailable = True
    result = _create("--tenant", "acme")
    assert result.exit_code == 1
    assert "cannot write to the audit topic" in " ".join(result.output.split())
    assert not (state_dir / "secrets" / "api-keys.yaml").exists()


def test_revoke_is_recorded_and_accepts_a_pasted_key_without_recording_its_secret(
    state_dir, recorded
):
    key = _create("--tenant", "acme").output.strip().splitlines()[-1]
    parsed = parse_key(key)
    assert parsed is not None
    result = CliRunner().invoke(main, ["keys", "revoke", key])
    assert result.exit_code == 0, result.output
    assert parsed.secret not in result.output
    assert recorded.events[-1][:3] == ("keys.revoke", parsed.key_id, "ok")
    assert recorded.events[-1][3] == {"tenant": "acme", "revoked_now": "True"}
    assert parsed.secret not in str(recorded.events)
    again = CliRunner().invoke(main, ["keys", "revoke", parsed.key_id])
    assert "already revoked" in again.output
    listed = CliRunner().invoke(main, ["keys", "list", "--tenant", "acme"])
    assert "revoked" in listed.output


def test_revoking_something_that_is_not_a_key_id_records_nothing(state_dir, recorded):
    result = CliRunner().invoke(main, ["keys", "revoke", "../etc/passwd"])
    assert result.exit_code == 1
    assert recorded.built == 0 and recorded.events == []


def test_create_takes_the_keys_own_rate_limits_and_list_shows_them(state_dir, recorded):
    result = _create("--tenant", "acme", "--requests-per-minute", "7", "--tokens-per-minute", "900")
    assert result.exit_code == 0, result.output
    parsed = parse_key(result.output.strip().splitlines()[-1])
    assert parsed is not None
    record = keys.key_store(get_settings()).registry().keys[parsed.key_id]
    assert (record.requests_per_minute, record.tokens_per_minute) == (7, 900)
    assert recorded.events[-1][3]["requests_per_minute"] == "7"
    assert recorded.events[-1][3]["tokens_per_minute"] == "900"
    assert _create("--tenant", "acme").exit_code == 0
    listed = CliRunner().invoke(main, ["keys", "list"]).output
    [limited_row] = [line for line in listed.splitlines() if parsed.key_id in line]
    assert " 7 " in limited_row and " 900 " in limited_row
    assert any("default" in line for line in listed.splitlines() if parsed.key_id not in line)


def test_create_refuses_a_rate_limit_below_one(state_dir, recorded):
    result = _create("--tenant", "acme", "--requests-per-minute", "0")
    assert result.exit_code == 2
    assert "requests-per-minute" in result.output
    assert not (state_dir / "secrets" / "api-keys.yaml").exists()
