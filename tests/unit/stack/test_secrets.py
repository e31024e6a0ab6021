"""The local stack's dead-letter key: made once by `sluice up`, 0600, handed to processors."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

from streams.settings import Settings
from streams.stack import Stack, local_processor_environment
from streams.stack.secrets import (
    dead_letter_key_path,
    ensure_dead_letter_key,
    local_dead_letter_key,
)


def settings_in(tmp_path: Path) -> Settings:
    return Settings.model_validate({"stack": {"state_dir": tmp_path}})


def test_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert local_dead_letter_key(settings) == {}
    assert ensure_dead_letter_key(settings) is True
    path = dead_letter_key_path(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = path.read_text().strip()
    assert len(base64.b64decode(key)) == 32
    assert ensure_dead_letter_key(settings) is False
    assert path.read_text().strip() == key, "a second `sluice up` keeps the key"
    assert local_dead_letter_key(settings) == {"SLUICE_DEAD_LETTERS__ENCRYPTION_KEY": key}


def test_processors_of_the_local_stack_get_the_key(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert "SLUICE_DEAD_LETTERS__ENCRYPTION_KEY" not in local_processor_environment(settings)
    ensure_dead_letter_key(settings)
    env = local_processor_environment(settings)
    assert env["SLUICE_DEAD_LETTERS__ENCRYPTION_KEY"] == (
        dead_letter_key_path(settings).read_text().strip()
    )


def test_sluice_up_makes_the_key(tmp_path: Path) -> None:
    said: list[str] = []
    Stack(settings_in(tmp_path), only=[]).up(said.append)
    assert dead_letter_key_path(settings_in(tmp_path)).is_file()
    assert said == [
        f"dead-letter encryption key: made {tmp_path / 'secrets' / 'dead-letter-key'} (0600)"
    ]
    Stack(settings_in(tmp_path), only=[]).up(said.append)
    assert len(said) == 1
