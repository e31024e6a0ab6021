"""Settings: prefix, nesting, derived client addresses, secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, without_password


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


def test_the_integration_tier_does_not_change_what_unit_tests_see():
    """Its conftest sets the test stack's environment only while its own tests run.

    Collecting both tiers imports it (so does this test); unit tests that run in
    the same session, before or after the integration tests, see the usual stack.
    """
    environment = dict(os.environ)
    from tests.integration import conftest as integration

    assert dict(os.environ) == environment, "importing the conftest changed os.environ"
    test_stack = integration.TEST_ENV
    for name in (
        "SLUICE_STACK__STATE_DIR",
        "SLUICE_STACK__KAFKA_PORT",
        "SLUICE_STACK__REGISTRY_PORT",
    ):
        assert os.environ.get(name) != test_stack[name], name
    settings = Settings()
    assert settings.stack.state_dir != Path(test_stack["SLUICE_STACK__STATE_DIR"])
    assert settings.kafka.bootstrap_servers != f"127.0.0.1:{test_stack['SLUICE_STACK__KAFKA_PORT']}"
    if not any(name.startswith(("SLUICE_STACK__", "SLUICE_KAFKA__")) for name in environment):
        assert settings.stack.state_dir == Path(".sluice")
        assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://sink:s3cret@clickhouse:8123/sluice", "http://sink:***@clickhouse:8123/sluice"),
        ("https://ops:p%40ss:w@registry:8081", "https://ops:***@registry:8081"),
        ("http://user@connect:8083", "http://user@connect:8083"),
        ("chdb:///var/lib/sluice/clickhouse", "chdb:///var/lib/sluice/clickhouse"),
        ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert without_password(url) == shown
