"""`sluice run gateway`: its settings reach the server, and a missing HTTP stack says what to do."""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import main
from streams.cli import run as run_command
from streams.errors import ConfigurationError
from streams.gateway import server
from streams.gateway.kafka_dispatch import TenantSigners
from streams.gateway.settings import GatewaySettings
from streams.llm.rate_limits import load_rate_limits
from streams.settings import Settings, get_settings
from streams.stack.tenant_keys import add_tenant, tenant_key_path


def test_run_gateway_starts_the_gateway_with_its_own_settings(monkeypatch: pytest.MonkeyPatch):
    seen: list[tuple[Any, Any]] = []
    monkeypatch.setenv("SLUICE_GATEWAY__PORT", "9123")
    monkeypatch.setattr(run_command, "local_processor_environment", lambda *_: {})
    monkeypatch.setattr(run_command, "setup_tracing", lambda *_: None)
    spec = dataclasses.replace(server.GATEWAY, run=lambda s, g, _p: seen.append((s, g)))
    monkeypatch.setattr(run_command, "GATEWAY", spec)
    result = CliRunner().invoke(main, ["run", "gateway"])
    assert result.exit_code == 0, result.output
    [(_settings, gateway)] = seen
    assert isinstance(gateway, GatewaySettings) and gateway.port == 9123
    get_settings.cache_clear()


def test_a_gateway_without_its_http_stack_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import fails as when not installed
    with pytest.raises(ConfigurationError, match=r"sluice\[gateway\]"):
        server.serve(get_settings(), GatewaySettings(), None)


def test_the_secrets_directory_defaults_to_the_local_stacks(tmp_path):
    settings = get_settings()
    assert server.secrets_directory(settings, GatewaySettings()) == settings.stack.root / "secrets"
    mine = GatewaySettings(secrets_dir=tmp_path)
    assert server.secrets_directory(settings, mine) == tmp_path


def test_the_rate_limits_default_to_the_schemas_file_which_loads():
    settings = get_settings()
    path = GatewaySettings().rate_limits_path(settings.schemas_dir)
    assert path == settings.schemas_dir / "rate_limits.yaml"
    assert load_rate_limits(path).for_tenant("acme").requests_per_minute is not None


def test_a_malformed_rate_limits_file_stops_the_start_and_names_the_entry(tmp_path):
    bad = tmp_path / "rate_limits.yaml"
    bad.write_text("tenants:\n  acme:\n    requests_per_minute: 0\n")
    gateway = GatewaySettings(rate_limits_file=bad, secrets_dir=tmp_path / "secrets")
    with pytest.raises(ConfigurationError, match=r"tenants\.acme\.requests_per_minute"):
        server.serve(get_settings(), gateway, None)


def test_the_gateway_reads_a_tenants_key_where_the_local_stack_writes_it(tmp_path):
    """`sluice tenants add` writes the key the gateway signs with: one path for both."""
    settings = Settings.model_validate({"stack": {"state_dir": tmp_path}})
    directory = server.secrets_directory(settings, GatewaySettings()) / server.TENANT_KEYS_DIR
    assert directory / "acme.key" == tenant_key_path(settings, "acme")
    add_tenant(settings, "acme")
    signer = TenantSigners(directory)("acme")
    assert signer.headers("inference.requests", b"k", b"v")  # a usable key, read as written
