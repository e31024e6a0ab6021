"""guard's budget enforcement settings: meter's public keys and its own budget config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import SecretStr

from processors.guard.processor import PROCESSOR
from processors.guard.settings import GuardSettings
from streams.errors import ConfigurationError
from streams.runtime.signing import METER_BUDGET, Signer, new_keypair
from streams.runtime.testing import Harness
from streams.settings import Settings
from tests.support.verdicts import unit_keypair


def test_guard_refuses_to_enforce_budgets_without_meters_public_keys() -> None:
    config = GuardSettings(
        embedder="none",
        budgets="enforce",
        hash_secret=SecretStr("s" * 32),
        verdict_signing_key=SecretStr(unit_keypair()[0]),
    )
    with pytest.raises(ConfigurationError, match="SLUICE_GUARD__BUDGET_PUBLIC_KEYS"):
        Harness(PROCESSOR, settings=Settings(), config=config)


def test_the_public_keys_come_from_the_environment_as_a_json_list(monkeypatch) -> None:
    old_private, old_public = new_keypair()
    new_private, new_public = new_keypair()
    monkeypatch.setenv("SLUICE_GUARD__BUDGET_PUBLIC_KEYS", json.dumps([old_public, new_public]))
    verifier = GuardSettings().budget_verifier()
    assert verifier.scheme == METER_BUDGET
    for private in (old_private, new_private):  # rotation: both keys verify meanwhile
        signer = Signer.from_secret(private, "k", METER_BUDGET)
        headers = signer.headers("metering.budgets", b"acme", b"v")
        assert verifier.verify("metering.budgets", b"acme", b"v", headers)


def test_the_budget_config_defaults_to_the_schemas_one(tmp_path: Path) -> None:
    assert GuardSettings().budgets_path(tmp_path) == tmp_path / "budgets.yaml"
    own = tmp_path / "mine.yaml"
    assert GuardSettings(budgets_file=own).budgets_path(tmp_path) == own
