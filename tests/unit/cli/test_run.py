"""`sluice run`: the local stack's defaults reach the settings the processor runs with."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from click.testing import CliRunner

from streams.cli import run as run_command
from streams.settings import get_settings

KEY_SETTING = "SLUICE_DEAD_LETTERS__ENCRYPTION_KEY"


class RecordingRunner:
    """Stands in for the Kafka loop: keeps the settings it was built with."""

    seen: list[Any] = []  # noqa: RUF012 (a test double)

    def __init__(self, spec: Any, settings: Any, config: Any, metrics_port: Any = None) -> None:
        RecordingRunner.seen.append(settings)

    def install_signal_handlers(self) -> None:
        pass

    def run(self) -> None:
        pass


def test_local_stack_defaults_are_in_the_settings_the_runner_gets(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    RecordingRunner.seen.clear()
    key = base64.b64encode(bytes(range(32))).decode()
    monkeypatch.setenv(KEY_SETTING, "placeholder")  # restored after the test...
    monkeypatch.delenv(KEY_SETTING)  # ...and unset while it runs
    monkeypatch.setattr(run_command, "local_processor_environment", lambda *_: {KEY_SETTING: key})
    monkeypatch.setattr(run_command, "Runner", RecordingRunner)
    monkeypatch.setattr(run_command, "setup_tracing", lambda *_: None)
    result = CliRunner().invoke(run_command.run, ["validate"])
    assert result.exit_code == 0, result.output
    (settings,) = RecordingRunner.seen
    assert settings.dead_letters.encryption_key.get_secret_value() == key
    get_settings.cache_clear()  # this process's cached settings now hold the test's key


def test_an_explicit_setting_wins_over_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingRunner.seen.clear()
    mine = base64.b64encode(bytes(32)).decode()
    monkeypatch.setenv(KEY_SETTING, mine)
    monkeypatch.setattr(
        run_command, "local_processor_environment", lambda *_: {KEY_SETTING: "from-the-stack"}
    )
    monkeypatch.setattr(run_command, "Runner", RecordingRunner)
    monkeypatch.setattr(run_command, "setup_tracing", lambda *_: None)
    result = CliRunner().invoke(run_command.run, ["validate"])
    assert result.exit_code == 0, result.output
    (settings,) = RecordingRunner.seen
    assert settings.dead_letters.encryption_key.get_secret_value() == mine
    get_settings.cache_clear()


def test_the_processor_says_which_kafka_user_it_logs_in_as_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    login = {
        "SLUICE_KAFKA__OPTIONS": '{"sasl.username": "sluice-validate"}',
        "SLUICE_KAFKA__SASL_PASSWORD": "not-to-be-printed",
    }
    for name in login:  # restored after the test, unset while it runs
        monkeypatch.setenv(name, "placeholder")
        monkeypatch.delenv(name)
    monkeypatch.setattr(run_command, "local_processor_environment", lambda *_: login)
    monkeypatch.setattr(run_command, "Runner", RecordingRunner)
    monkeypatch.setattr(run_command, "setup_tracing", lambda *_: None)
    result = CliRunner().invoke(run_command.run, ["validate"])
    assert result.exit_code == 0, result.output
    assert "as Kafka user sluice-validate" in " ".join(result.output.split())
    assert "not-to-be-printed" not in result.output
    get_settings.cache_clear()
