"""Secrets the local stack keeps for its processors, under ``<state dir>/secrets/`` (0600).

Production sets these from a secret store; the local stack makes them once so that
they survive ``sluice down`` and every processor of the stack shares them.
"""

from __future__ import annotations

import os
from pathlib import Path

from streams.runtime.sealing import KEY_SETTING, new_key
from streams.settings import Settings

DEAD_LETTER_KEY_FILE = "dead-letter-key"


def dead_letter_key_path(settings: Settings) -> Path:
    """Where the local stack keeps the dead-letter encryption key."""
    return settings.stack.root / "secrets" / DEAD_LETTER_KEY_FILE


def ensure_dead_letter_key(settings: Settings) -> bool:
    """Make the local dead-letter key unless there is one; True when it was made now."""
    path = dead_letter_key_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two `sluice up` at once cannot each write a key; 0600 from the first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(new_key() + "\n")
    return True


def local_dead_letter_key(settings: Settings) -> dict[str, str]:
    """``SLUICE_DEAD_LETTERS__ENCRYPTION_KEY`` from the local stack's file, if it has one.

    Never made here: replicas that each made their own key could not read one
    another's dead letters; only ``sluice up`` makes it.
    """
    path = dead_letter_key_path(settings)
    if not path.is_file():
        return {}
    return {KEY_SETTING: path.read_text(encoding="ascii").strip()}
