"""The local stack's tenants: keys made once (0600), a registry guard is given, rotation."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.cli import tenants as tenants_cli
from streams.runtime.signing import TENANT_REQUEST, Signer, public_key_of
from streams.runtime.tenants import TenantRegistry
from streams.settings import Settings, get_settings
from streams.stack import Stack, local_processor_environment
from streams.stack.tenant_keys import (
    DEMO_TENANTS,
    UnknownTenantError,
    add_tenant,
    configured_tenants,
    ensure_tenants,
    local_registry,
    rotate_tenant,
    tenant_key_path,
    tenant_registry_path,
    tenant_signing_key,
)
from tests.support.audit import Recorded


def settings_in(tmp_path: Path) -> Settings:
    return Settings.model_validate({"stack": {"state_dir": tmp_path}})


def verifies(registry: TenantRegistry, private: str) -> str | None:
    headers = Signer.from_secret(private, "k", TENANT_REQUEST).headers("t", b"k", b"v")
    return registry.tenant_of_key(registry.verifier().verify("t", b"k", b"v", headers))


def test_the_shipped_configuration_names_the_policy_budget_and_demo_tenants() -> None:
    named = configured_tenants(Settings())
    assert {"acme", "northbank", "telemetry", "globex", *DEMO_TENANTS} <= set(named)
    assert "NorthBank" not in named


def test_sluice_up_registers_them_once_with_private_keys_0600(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    said: list[str] = []
    Stack(settings, only=[]).up(said.append)
    registry = local_registry(settings)
    assert set(registry.tenants) == set(configured_tenants(settings))
    path = tenant_registry_path(settings)
    assert path == tmp_path / "secrets" / "tenants.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for tenant in registry.tenants:
        key = tenant_key_path(settings, tenant)
        assert key == tmp_path / "secrets" / "tenants" / f"{tenant}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert verifies(registry, tenant_signing_key(settings, tenant)) == tenant
    ids = {registry.pseudonym_key_id(t) for t in registry.tenants}
    assert len(ids) == len(registry.tenants)  # random, one each
    assert any("registered" in line for line in said)
    said.clear()
    before = path.read_text()
    Stack(settings, only=[]).up(said.append)
    assert said == [] and path.read_text() == before


def test_guard_alone_is_given_the_registry(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert "SLUICE_GUARD__TENANTS_PATH" not in local_processor_environment(settings, "guard")
    ensure_tenants(settings, ["acme"])
    env = local_processor_environment(settings, "guard")
    assert env["SLUICE_GUARD__TENANTS_PATH"] == str(tenant_registry_path(settings).resolve())
    for other in ("infer", "meter", "sink", "validate", ""):
        assert "SLUICE_GUARD__TENANTS_PATH" not in local_processor_environment(settings, other)


def test_rotation_keeps_the_old_key_until_it_is_retired(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert add_tenant(settings, "acme") is True
    assert add_tenant(settings, "acme") is False
    old = tenant_signing_key(settings, "acme")
    pseudonym = local_registry(settings).pseudonym_key_id("acme")
    keys = rotate_tenant(settings, "acme")
    new = tenant_signing_key(settings, "acme")
    assert new != old and keys == [public_key_of(new), public_key_of(old)]
    registry = local_registry(settings)
    assert verifies(registry, old) == verifies(registry, new) == "acme"
    assert registry.pseudonym_key_id("acme") == pseudonym  # tokens stay the same
    assert rotate_tenant(settings, "acme", retire=True) == [public_key_of(new)]
    registry = local_registry(settings)
    assert verifies(registry, new) == "acme"
    with pytest.raises(Exception, match="unknown key"):
        verifies(registry, old)
    with pytest.raises(UnknownTenantError, match="sluice tenants add NorthBank"):
        rotate_tenant(settings, "NorthBank")  # ids are exact: acme's case variant is not acme


@pytest.fixture
def cli_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("SLUICE_STACK__STATE_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        yield settings_in(tmp_path)
    finally:
        get_settings.cache_clear()


def test_the_cli_adds_lists_and_rotates_without_printing_a_private_key(
    cli_state: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tenants_cli, "Auditor", Recorded())
    runner = CliRunner()
    added = runner.invoke(main, ["tenants", "add", "initech"])
    assert added.exit_code == 0, added.output
    private = tenant_signing_key(cli_state, "initech")
    assert "initech.key" in added.output.replace("\n", "")
    rotated = runner.invoke(main, ["tenants", "rotate", "initech"])
    assert rotated.exit_code == 0, rotated.output
    listed = runner.invoke(main, ["tenants", "list"])
    assert listed.exit_code == 0 and "initech" in listed.output
    new = tenant_signing_key(cli_state, "initech")
    for output in (added.output, rotated.output, listed.output):
        assert private not in output and new not in output
    refused = runner.invoke(main, ["tenants", "add", "../x"])
    assert refused.exit_code != 0 and "tenant id" in refused.output
