from __future__ import annotations

from pathlib import Path

import pytest

from processors.guard.policy import Action, Entity, Policy, PolicyError
from tests.support.guard import GUARD_DIR

ALL = {e.value: "tag" for e in Entity}


def policy(**overrides: object) -> Policy:
    document: dict[str, object] = {
        "version": "t1",
        "default": {"pii_score_threshold": 0.4, "entities": dict(ALL)},
    }
    document.update(overrides)
    return Policy.from_mapping(document, "test policy")


def test_shipped_policy_is_valid_and_versioned() -> None:
    shipped = Policy.load(GUARD_DIR / "policy.yaml")
    assert shipped.version
    default = shipped.for_tenant("any-tenant")
    assert default.active == frozenset(Entity)
    assert default.needs_ner
    assert not shipped.for_tenant("telemetry").needs_ner
    assert default.max_input_chars == 100_000
    assert shipped.for_tenant("telemetry").max_input_chars == 20_000
    assert shipped.largest_input_chars == 100_000


def test_max_input_chars_defaults_and_overrides() -> None:
    resolved = policy(tenants={"small": {"max_input_chars": 10}})
    assert resolved.for_tenant("other").max_input_chars == 100_000
    assert resolved.for_tenant("small").max_input_chars == 10
    assert resolved.largest_input_chars == 100_000


def test_tenant_override_merges_over_default() -> None:
    p = policy(
        tenants={
            "bank": {
                "pii_score_threshold": 0.3,
                "entities": {
                    "CREDIT_CARD": "block",
                    "PHONE_NUMBER": {"action": "mask", "keep_last": 2},
                },
                "injection": {"action": "flag"},
            }
        }
    )
    bank = p.for_tenant("bank")
    assert bank.entities[Entity.CREDIT_CARD].action is Action.BLOCK
    assert bank.entities[Entity.PHONE_NUMBER].keep_last == 2
    assert bank.entities[Entity.EMAIL_ADDRESS].action is Action.TAG  # inherited
    assert bank.pii_score_threshold == 0.3
    assert bank.injection.action == "flag"
    assert bank.injection.threshold == 0.7  # inherited default
    assert p.for_tenant("other").pii_score_threshold == 0.4


def test_off_removes_an_entity_and_ner() -> None:
    p = policy(tenants={"logs": {"entities": {"PERSON": "off"}}})
    logs = p.for_tenant("logs")
    assert Entity.PERSON not in logs.active
    assert not logs.needs_ner


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        (
            {"default": {"pii_score_threshold": 0.4, "entities": {**ALL, "PASSPORT": "tag"}}},
            "default.entities.PASSPORT: unknown entity type 'PASSPORT'; known: 'PERSON'",
        ),
        (
            {"default": {"pii_score_threshold": 0.4, "entities": {**ALL, "PERSON": "redact"}}},
            "default.entities.PERSON.action: 'redact' is not allowed; use one of 'tag', 'hash'",
        ),
        (
            {
                "default": {
                    "pii_score_threshold": 0.4,
                    "entities": ALL,
                    "injection": {"action": "warn"},
                }
            },
            "default.injection.action: 'warn' is not allowed; use one of 'flag' or 'block'",
        ),
        (
            {"default": {"pii_score_threshold": 1.5, "entities": ALL}},
            "default.pii_score_threshold: Input should be less than or equal to 1",
        ),
        (
            {"default": {"pii_score_threshold": 0.4, "max_input_chars": 0, "entities": ALL}},
            "default.max_input_chars: Input should be greater than or equal to 1",
        ),
        (
            {"default": {"pii_score_threshold": 0.4, "entites": ALL}},
            "default.entites: unknown key (check its spelling)",
        ),
        (
            {
                "default": {"pii_score_threshold": 0.4, "entities": ALL},
                "tenants": {"t": {"entities": {"EMAIL": "tag"}}},
            },
            "tenants.t.entities.EMAIL: unknown entity type 'EMAIL'",
        ),
    ],
)
def test_invalid_policies_name_the_problem(document: dict[str, object], expected: str) -> None:
    with pytest.raises(PolicyError) as error:
        Policy.from_mapping({"version": "1", **document}, "policy.yaml")
    assert "policy.yaml is not a valid guard policy" in str(error.value)
    assert expected in str(error.value)


def test_missing_version_and_incomplete_default() -> None:
    with pytest.raises(PolicyError, match="version: Field required"):
        Policy.from_mapping({"default": {"pii_score_threshold": 0.4, "entities": ALL}})
    partial = {k: v for k, v in ALL.items() if k != "US_SSN"}
    with pytest.raises(PolicyError, match=r"missing: US_SSN \(use `off`"):
        Policy.from_mapping(
            {"version": 1, "default": {"pii_score_threshold": 0.4, "entities": partial}}
        )


def test_unreadable_file_says_which_setting_to_use(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="SLUICE_GUARD__POLICY_PATH"):
        Policy.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: [1\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        Policy.load(bad)
