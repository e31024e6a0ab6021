"""The local stack's keys: made once by `sluice up`, 0600, each handed to its processors."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

from processors.guard.processor import PROCESSOR as GUARD
from processors.guard.settings import GuardSettings
from processors.infer.settings import InferSettings
from processors.meter.settings import MeterSettings
from streams.runtime.signing import METER_BUDGET, Signer, Verifier, public_key_of
from streams.settings import Settings
from streams.stack import Stack, local_processor_environment
from streams.stack.secrets import (
    budget_key_paths,
    dead_letter_key_path,
    ensure_budget_keys,
    ensure_dead_letter_key,
    ensure_verdict_keys,
    local_dead_letter_key,
    verdict_key_paths,
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
    assert said[:3] == [
        f"dead-letter encryption key: made {tmp_path / 'secrets' / 'dead-letter-key'} (0600)",
        f"guard's verdict signing key: made {tmp_path / 'secrets' / 'verdict-signing-key'} (0600)",
        f"meter's budget signing key: made {tmp_path / 'secrets' / 'budget-signing-key'} (0600)",
    ]
    assert said[3].startswith("tenants ") and len(said) == 4  # see test_tenant_keys
    Stack(settings_in(tmp_path), only=[]).up(said.append)
    assert len(said) == 4


def test_the_verdict_keypair_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert ensure_verdict_keys(settings) is True
    private_path, public_path = verdict_key_paths(settings)
    private, public = private_path.read_text().strip(), public_path.read_text().strip()
    assert public_key_of(private) == public
    for path in (private_path, public_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_verdict_keys(settings) is False
    assert private_path.read_text().strip() == private, "a second `sluice up` keeps the key"
    public_path.unlink()  # stopped between the two writes: the same public key again
    ensure_verdict_keys(settings)
    assert public_path.read_text().strip() == public


def test_only_guard_gets_the_private_key_and_infer_the_public_one(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_verdict_keys(settings)
    guard = local_processor_environment(settings, "guard")
    infer = local_processor_environment(settings, "infer")
    assert "SLUICE_INFER__VERDICT_PUBLIC_KEYS" not in guard
    assert "SLUICE_GUARD__VERDICT_SIGNING_KEY" not in infer
    for other in ("validate", "meter", "sink", ""):
        env = local_processor_environment(settings, other)
        assert not any("VERDICT" in name for name in env), other
    # What each reads from its environment fits the other: a record guard signs verifies.
    signing = GuardSettings.model_validate(
        {"verdict_signing_key": guard["SLUICE_GUARD__VERDICT_SIGNING_KEY"]}
    )
    assert GUARD.signers is not None
    signer = GUARD.signers(signing)["inference.requests.safe"]
    keys = json.loads(infer["SLUICE_INFER__VERDICT_PUBLIC_KEYS"])
    verifier = Verifier.from_settings(
        InferSettings(verdict_public_keys=keys).verdict_public_keys, "k"
    )
    headers = signer.headers("inference.requests.safe", b"k", b"v")
    assert verifier.verify("inference.requests.safe", b"k", b"v", headers)
    assert isinstance(signer, Signer)


def test_the_budget_keypair_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert ensure_budget_keys(settings) is True
    private_path, public_path = budget_key_paths(settings)
    assert (private_path.name, public_path.name) == ("budget-signing-key", "budget-public-key")
    private, public = private_path.read_text().strip(), public_path.read_text().strip()
    assert public_key_of(private) == public
    for path in (private_path, public_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_budget_keys(settings) is False
    assert private_path.read_text().strip() == private, "a second `sluice up` keeps the key"
    ensure_verdict_keys(settings)
    assert verdict_key_paths(settings)[0].read_text().strip() != private, "a key per signer"


def test_only_meter_gets_the_budget_private_key_and_guard_the_public_one(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_budget_keys(settings)
    meter = local_processor_environment(settings, "meter")
    guard = local_processor_environment(settings, "guard")
    assert set(meter) >= {"SLUICE_METER__BUDGET_SIGNING_KEY"}
    assert "SLUICE_GUARD__BUDGET_PUBLIC_KEYS" not in meter
    assert "SLUICE_METER__BUDGET_SIGNING_KEY" not in guard
    for other in ("validate", "infer", "sink", "drift", ""):
        env = local_processor_environment(settings, other)
        assert not any("BUDGET" in name for name in env), other
    # What each reads from its environment fits the other: a budget meter signs verifies.
    signer = MeterSettings.model_validate(
        {"budget_signing_key": meter["SLUICE_METER__BUDGET_SIGNING_KEY"]}
    ).budget_signer()
    assert signer.scheme == METER_BUDGET
    verifier = GuardSettings.model_validate(
        {"budget_public_keys": json.loads(guard["SLUICE_GUARD__BUDGET_PUBLIC_KEYS"])}
    ).budget_verifier()
    headers = signer.headers("metering.budgets", b"acme", b"v")
    assert verifier.verify("metering.budgets", b"acme", b"v", headers)
