"""guard takes a request's tenant from the key that signed it, never from its tenant_id.

Through the runner's real batch path (the in-process harness), with a registry of
three tenants: acme and globex have policy overrides, initech is registered but
has none, and this policy does not let the default apply to unlisted tenants.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from processors.guard.policy import Entity
from processors.guard.processor import BLOCKED, FINDINGS, PROCESSOR, REQUESTS, RESULTS, SAFE
from processors.guard.settings import GuardSettings
from streams.runtime.signing import TENANT_REQUEST, new_keypair
from streams.runtime.testing import BatchResult, Harness
from streams.settings import Settings
from tests.support.tenants import UnitTenants, sign
from tests.support.verdicts import unit_keypair

EMAIL = "maria.garcia@example.com"
TOKEN = re.compile(r"<EMAIL_ADDRESS_[a-z2-7]{26}>")


def write_policy(path: Path, *, default_applies_to_unlisted: bool) -> Path:
    rules = {e.value: "tag" for e in Entity}
    rules["EMAIL_ADDRESS"] = "hash"
    policy = {
        "version": "identity-1",
        "default": {"pii_score_threshold": 0.4, "entities": rules},
        "default_applies_to_unlisted": default_applies_to_unlisted,
        "tenants": {"acme": {}, "globex": {"injection": {"action": "flag"}}},
    }
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> UnitTenants:
    return UnitTenants(tmp_path_factory.mktemp("tenants")).add("acme", "globex", "initech")


@pytest.fixture(scope="module")
def harness(
    tenants: UnitTenants, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness[GuardSettings, Any]]:
    policy = write_policy(
        tmp_path_factory.mktemp("policy") / "policy.yaml", default_applies_to_unlisted=False
    )
    config = GuardSettings(
        embedder="none",
        budgets="off",
        request_ids="off",
        analyzer_isolation="thread",
        hash_secret=SecretStr("s" * 32),
        verdict_signing_key=SecretStr(unit_keypair()[0]),
        tenants_path=tenants.path,
        policy_path=policy,
    )
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        yield harness


def request(request_id: str, tenant: str, text: str = "What is the capital of France?") -> dict:
    return {
        "request_id": request_id,
        "tenant_id": tenant,
        "model": "textgen",
        "input_text": text,
        "user_id": "u-17",
        "source": "sdk:crm",
        "created_at": 1_700_000_000_000,
        "metadata": {"feature": "chat"},
    }


def tokens(out: BatchResult) -> set[str]:
    return {t for p in out.produced for t in TOKEN.findall(p.raw.decode("utf-8", "replace"))}


def test_a_request_signed_by_its_tenant_passes(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    out = harness.run([tenants.record(harness, request("r1", "acme"), key="r1")])
    [safe] = out.values(SAFE)
    assert (safe["tenant_id"], safe["guard"]["action"]) == ("acme", "pass")
    assert out.dead_letters == []


def test_an_unsigned_request_is_dead_lettered_with_its_original_bytes(
    harness: Harness[GuardSettings, Any],
) -> None:
    raw = harness.encode(REQUESTS, request("r2", "acme"))
    out = harness.run([harness.record(REQUESTS, raw, key="r2")])
    assert out.produced == []
    [letter] = out.dead_letters
    assert letter.info.error_class == "UnauthenticatedRequest"
    assert letter.info.stage == "authenticate"
    assert letter.raw == raw and letter.key == b"r2"
    assert "no sluice.tenant.signature header" in letter.info.message


def test_forged_tampered_and_malformed_signatures_are_dead_lettered(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    raw = harness.encode(REQUESTS, request("r3", "acme"))
    other = harness.encode(REQUESTS, request("r3", "acme", "Transfer everything"))
    stranger = new_keypair()[0]  # a key no tenant registered
    good = tenants.headers("acme", "r3", raw)
    records = [
        harness.record(REQUESTS, raw, key="r3", headers=sign(stranger, "r3", raw)),
        harness.record(REQUESTS, other, key="r3", headers=good),  # value changed
        harness.record(REQUESTS, raw, key="r4", headers=good),  # key changed
        harness.record(
            REQUESTS, raw, key="r3", headers=sign(tenants.private_keys["acme"], "r3", raw, "x")
        ),  # signed for another topic
        harness.record(
            REQUESTS,
            raw,
            key="r3",
            headers=[(TENANT_REQUEST.signature_header, b"not base64!"), good[1]],
        ),
        harness.record(
            REQUESTS,
            raw,
            key="r3",
            headers=[(TENANT_REQUEST.signature_header, base64.b64encode(b"\0" * 64)), good[1]],
        ),
    ]
    out = harness.run(records)
    assert out.produced == []
    assert out.kinds() == ["UnauthenticatedRequest"] * len(records)
    messages = [d.info.message for d in out.dead_letters]
    assert "unknown key" in messages[0]
    assert all("does not verify" in m for m in (messages[1], messages[2], messages[3], messages[5]))
    assert "malformed" in messages[4]


def test_another_tenants_id_is_blocked_as_a_mismatch_attributed_to_the_signer(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    # acme signs a request that claims globex (laxer injection policy), and wrong-case ids.
    spoofs = [
        request("r5", "globex", f"Mail {EMAIL}"),
        request("r6", "Acme"),
        request("r7", "ACME"),
    ]
    out = harness.run(
        [tenants.record(harness, s, signer="acme", key=s["request_id"]) for s in spoofs]
    )
    blocked = out.values(BLOCKED)
    assert [(b["request_id"], b["tenant_id"], b["guard"]["reason"]) for b in blocked] == [
        ("r5", "acme", "tenant_mismatch"),
        ("r6", "acme", "tenant_mismatch"),
        ("r7", "acme", "tenant_mismatch"),
    ]
    assert out.values(SAFE) == [] and out.values(FINDINGS) == []
    # Never analysed, never copied: the claimed text and ids appear nowhere guard wrote.
    for produced in out.produced:
        text = produced.raw.decode("utf-8", "replace")
        assert EMAIL not in text and "globex" not in text and "Acme" not in text
    assert all(b["input_text"] == "<WITHHELD:tenant_mismatch>" for b in blocked)


def test_claiming_a_tenant_does_not_give_its_pseudonyms(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    text = f"Please write to {EMAIL}"
    acme = tokens(harness.run([tenants.record(harness, request("r8", "acme", text))]))
    globex = tokens(harness.run([tenants.record(harness, request("r9", "globex", text))]))
    assert len(acme) == 1 and len(globex) == 1 and acme != globex
    spoof = harness.run(
        [tenants.record(harness, request("r10", "globex", text), signer="acme", key="r10")]
    )
    assert [b["guard"]["reason"] for b in spoof.values(BLOCKED)] == ["tenant_mismatch"]
    assert tokens(spoof) == set()


def test_a_registered_tenant_without_a_policy_is_blocked_as_unknown(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    out = harness.run([tenants.record(harness, request("r11", "initech"), key="r11")])
    [blocked] = out.values(BLOCKED)
    assert (blocked["tenant_id"], blocked["guard"]["reason"]) == ("initech", "unknown_tenant")
    assert out.values(FINDINGS) == []


def test_a_tenant_that_is_not_registered_can_only_arrive_unauthenticated(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants
) -> None:
    # NorthBank has no key in the registry: whatever key signs it, it is not NorthBank's.
    raw = harness.encode(REQUESTS, request("r12", "NorthBank"))
    out = harness.run(
        [
            harness.record(REQUESTS, raw, key="r12", headers=sign(new_keypair()[0], "r12", raw)),
            tenants.record(harness, request("r13", "NorthBank"), signer="globex", key="r13"),
        ]
    )
    assert out.kinds() == ["UnauthenticatedRequest"]
    assert [(b["tenant_id"], b["guard"]["reason"]) for b in out.values(BLOCKED)] == [
        ("globex", "tenant_mismatch")
    ]


def test_model_responses_of_unregistered_tenants_are_dead_lettered(
    harness: Harness[GuardSettings, Any],
) -> None:
    def result(tenant: str) -> dict[str, Any]:
        return {
            "request_id": f"res-{tenant}",
            "tenant_id": tenant,
            "model": "textgen",
            "status": "ok",
            "request_created_at": 1_700_000_000_000,
            "completed_at": 1_700_000_001_000,
            "output_text": f"Sure, I wrote to {EMAIL}.",
        }

    out = harness.run(
        [harness.record("inference.responses", result(t)) for t in ("acme", "northbank")]
    )
    assert [r["tenant_id"] for r in out.values(RESULTS)] == ["acme"]
    assert out.kinds() == ["UnauthenticatedRequest"]


def test_the_default_may_apply_to_registered_tenants_when_the_policy_says_so(
    tenants: UnitTenants, tmp_path: Path
) -> None:
    config = GuardSettings(
        embedder="none",
        budgets="off",
        request_ids="off",
        analyzer_isolation="thread",
        hash_secret=SecretStr("s" * 32),
        verdict_signing_key=SecretStr(unit_keypair()[0]),
        tenants_path=tenants.path,
        policy_path=write_policy(tmp_path / "policy.yaml", default_applies_to_unlisted=True),
    )
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        out = harness.run([tenants.record(harness, request("r14", "initech"), key="r14")])
    assert [s["tenant_id"] for s in out.values(SAFE)] == ["initech"]
