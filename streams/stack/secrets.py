"""Secrets the local stack keeps for its processors, under ``<state dir>/secrets/`` (0600).

Production sets these from a secret store; the local stack makes them once so that
they survive ``sluice down`` and every processor of the stack shares them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from streams.runtime.sealing import KEY_SETTING, new_key
from streams.runtime.signing import new_keypair, public_key_of
from streams.settings import Settings

DEAD_LETTER_KEY_FILE = "dead-letter-key"
VERDICT_SIGNING_KEY_FILE = "verdict-signing-key"
VERDICT_PUBLIC_KEY_FILE = "verdict-public-key"
BUDGET_SIGNING_KEY_FILE = "budget-signing-key"
BUDGET_PUBLIC_KEY_FILE = "budget-public-key"
#: The settings guard and infer read them from (each processor's own settings class).
VERDICT_SIGNING_KEY_SETTING = "SLUICE_GUARD__VERDICT_SIGNING_KEY"
VERDICT_PUBLIC_KEYS_SETTING = "SLUICE_INFER__VERDICT_PUBLIC_KEYS"
#: meter signs budgets, guard verifies them.
BUDGET_SIGNING_KEY_SETTING = "SLUICE_METER__BUDGET_SIGNING_KEY"
BUDGET_PUBLIC_KEYS_SETTING = "SLUICE_GUARD__BUDGET_PUBLIC_KEYS"


def dead_letter_key_path(settings: Settings) -> Path:
    """Where the local stack keeps the dead-letter encryption key."""
    return settings.stack.root / "secrets" / DEAD_LETTER_KEY_FILE


def ensure_dead_letter_key(settings: Settings) -> bool:
    """Make the local dead-letter key unless there is one; True when it was made now."""
    return write_once(dead_letter_key_path(settings), new_key())


def write_once(path: Path, text: str) -> bool:
    """Write ``text`` to a new file ``path`` (0600); False, untouched, when it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two `sluice up` at once cannot each write a key; 0600 from the first byte.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text + "\n")
    return True


def verdict_key_paths(settings: Settings) -> tuple[Path, Path]:
    """Where the local stack keeps guard's signing key and its public key."""
    secrets = settings.stack.root / "secrets"
    return secrets / VERDICT_SIGNING_KEY_FILE, secrets / VERDICT_PUBLIC_KEY_FILE


def ensure_verdict_keys(settings: Settings) -> bool:
    """Make guard's verdict keypair unless there is one; True when it was made now."""
    return _ensure_keypair(*verdict_key_paths(settings))


def _ensure_keypair(private_path: Path, public_path: Path) -> bool:
    """Make a keypair in these two files unless there is one; True when it was made now.

    The public key is derived from the private one, so a stack stopped between the two
    writes gets the same public key next time rather than a mismatched pair.
    """
    made = write_once(private_path, new_keypair()[0])
    private = private_path.read_text(encoding="ascii").strip()
    write_once(public_path, public_key_of(private))
    return made


def local_verdict_keys(settings: Settings, processor: str) -> dict[str, str]:
    """The verdict key each processor may hold: guard the private one, infer the public one.

    Only guard gets the private key: a processor that held it could sign verdicts.
    """
    private_path, public_path = verdict_key_paths(settings)
    if processor == "guard" and private_path.is_file():
        return {VERDICT_SIGNING_KEY_SETTING: private_path.read_text(encoding="ascii").strip()}
    if processor == "infer" and public_path.is_file():
        public = public_path.read_text(encoding="ascii").strip()
        return {VERDICT_PUBLIC_KEYS_SETTING: json.dumps([public])}
    return {}


def budget_key_paths(settings: Settings) -> tuple[Path, Path]:
    """Where the local stack keeps meter's budget signing key and its public key."""
    secrets = settings.stack.root / "secrets"
    return secrets / BUDGET_SIGNING_KEY_FILE, secrets / BUDGET_PUBLIC_KEY_FILE


def ensure_budget_keys(settings: Settings) -> bool:
    """Make meter's budget keypair unless there is one; True when it was made now."""
    return _ensure_keypair(*budget_key_paths(settings))


def local_budget_keys(settings: Settings, processor: str) -> dict[str, str]:
    """The budget key each processor may hold: meter the private one, guard the public one.

    Only meter gets the private key: a processor that held it could lift a tenant's block.
    """
    private_path, public_path = budget_key_paths(settings)
    if processor == "meter" and private_path.is_file():
        return {BUDGET_SIGNING_KEY_SETTING: private_path.read_text(encoding="ascii").strip()}
    if processor == "guard" and public_path.is_file():
        public = public_path.read_text(encoding="ascii").strip()
        return {BUDGET_PUBLIC_KEYS_SETTING: json.dumps([public])}
    return {}


def local_dead_letter_key(settings: Settings) -> dict[str, str]:
    """``SLUICE_DEAD_LETTERS__ENCRYPTION_KEY`` from the local stack's file, if it has one.

    Never made here: replicas that each made their own key could not read one
    another's dead letters; only ``sluice up`` makes it.
    """
    path = dead_letter_key_path(settings)
    if not path.is_file():
        return {}
    return {KEY_SETTING: path.read_text(encoding="ascii").strip()}
