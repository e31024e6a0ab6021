"""Settings: prefix, nesting, derived client addresses, secrets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_defaults_point_at_local_stack(monkeypatch):
    monkeypatch.delenv("SLUICE_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == f"127.0.0.1:{settings.stack.kafka_port}"
    assert settings.registry.url.endswith(f":{settings.stack.registry_port}/apis/ccompat/v7")


def test_stack_ports_move_client_defaults(monkeypatch):
    monkeypatch.setenv("SLUICE_STACK__KAFKA_PORT", "29092")
    monkeypatch.setenv("SLUICE_STACK__REGISTRY_PORT", "28081")
    monkeypatch.delenv("SLUICE_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("SLUICE_REGISTRY__URL", raising=False)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "127.0.0.1:29092"
    assert settings.registry.url == "http://127.0.0.1:28081/apis/ccompat/v7"


def test_explicit_bootstrap_wins(monkeypatch):
    monkeypatch.setenv("SLUICE_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    assert Settings().kafka.bootstrap_servers == "broker:9092"


def test_librdkafka_options_pass_through(monkeypatch):
    monkeypatch.setenv(
        "SLUICE_KAFKA__OPTIONS", '{"security.protocol": "SASL_SSL", "linger.ms": "20"}'
    )
    monkeypatch.setenv("SLUICE_KAFKA__SASL_PASSWORD", "hunter2")
    settings = Settings()
    conf = settings.kafka.client_config(**{"group.id": "g"})
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["linger.ms"] == "20"
    assert conf["sasl.password"] == "hunter2"
    assert conf["group.id"] == "g"
    assert "hunter2" not in repr(settings)


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.log_level = "DEBUG"


def test_invalid_values_are_refused(monkeypatch):
    monkeypatch.setenv("SLUICE_RUNNER__BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="batch_size"):
        Settings()
