"""guard, through the runner's batch path: personal data planted in every field of a request.

Nothing guard produces (safe, blocked, results, findings), no header, no dead
letter's reason and no log line may carry the planted values; only a dead
letter's original bytes do, by design.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pydantic import SecretStr

from processors.guard.fields import USER_ID_PERSONAL_DATA, WITHHELD_USER_ID
from processors.guard.processor import BLOCKED, FINDINGS, PROCESSOR, REQUESTS, RESPONSES, RESULTS
from processors.guard.settings import GuardSettings
from streams.runtime.testing import BatchResult, Harness
from streams.settings import Settings
from tests.support.tenants import UnitTenants
from tests.support.verdicts import unit_keypair

EMAIL = "zelda.quixote7731@example.org"
NAME = "Zelda Quixote"
PHONE = "+1 415 555 0137"
#: Pieces of the planted values that must not survive anywhere. The name goes where the
#: NER model can tell it from context (a sentence) or the user_id rule sees its shape;
#: in a bare fragment ("sdk:crm Zelda Quixote") a small NER model may not see a name.
PLANTED = (EMAIL, "zelda.quixote7731", "Quixote", "415 555", "555 0137")


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> UnitTenants:
    return UnitTenants(tmp_path_factory.mktemp("tenants")).add("acme", "globex")


@pytest.fixture(scope="module")
def harness(tenants: UnitTenants) -> Iterator[Harness[GuardSettings, Any]]:
    config = GuardSettings(
        embedder="none",
        budgets="off",
        request_ids="off",
        hash_secret=SecretStr("s" * 32),
        verdict_signing_key=SecretStr(unit_keypair()[0]),
        tenants_path=tenants.path,
    )
    with Harness(PROCESSOR, settings=Settings(), config=config) as harness:
        yield harness


def request(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "request_id": "r-planted",
        "tenant_id": "acme",
        "model": "textgen",
        "input_text": f"Hi, I am {NAME}, mail me at {EMAIL} or call {PHONE}.",
        "user_id": EMAIL,
        "source": f"sdk:crm {EMAIL} {PHONE}",
        "created_at": 1_700_000_000_000,
        "metadata": {"contact": f"<{EMAIL}>", EMAIL: PHONE, "arm": "b", PHONE: "x"},
    }
    value.update(changes)
    return value


def leaks(out: BatchResult, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Where a planted value shows, but in a dead letter's original bytes."""
    found = []
    for produced in out.produced:
        texts = [produced.raw.decode("utf-8", "replace"), str(produced.value)]
        texts += [(v or b"").decode("utf-8", "replace") for _, v in produced.headers]
        found += [f"{produced.topic}" for t in texts for p in PLANTED if p in t]
    for letter in out.dead_letters:
        texts = [(v or b"").decode("utf-8", "replace") for _, v in letter.headers]
        texts.append(letter.info.message + orjson.dumps(letter.info.details).decode())
        found += [f"{letter.topic} headers" for t in texts for p in PLANTED if p in t]
    for record in caplog.records:
        text = record.getMessage() + (record.exc_text or "")
        found += [f"log {record.name}" for p in PLANTED if p in text]
    return found


def test_a_request_with_personal_data_everywhere_is_blocked_and_redacted(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        out = harness.run([tenants.record(harness, request())])
    [blocked] = out.values(BLOCKED)
    assert blocked["guard"]["reason"] == USER_ID_PERSONAL_DATA
    assert blocked["user_id"] == WITHHELD_USER_ID
    fields = {f["field"] for f in out.values(FINDINGS)}
    assert fields == {"input_text", "user_id", "source", "metadata.contact", "metadata_key"} | {
        "metadata.*"
    }
    assert leaks(out, caplog) == []


def test_a_result_with_personal_data_everywhere_is_redacted(
    harness: Harness[GuardSettings, Any], caplog: pytest.LogCaptureFixture
) -> None:
    result = {
        "request_id": "r-planted",
        "tenant_id": "acme",
        "model": "textgen",
        "status": "error",
        "request_created_at": 1_700_000_000_000,
        "completed_at": 1_700_000_001_000,
        "error_code": "backend_rejected",
        "error_message": f"cannot tokenize {EMAIL}",
        "output_text": f"Hi, I am {NAME}, write to {EMAIL} or call {PHONE}.",
        "metadata": {"contact": EMAIL, EMAIL: PHONE},
    }
    with caplog.at_level(logging.DEBUG):
        out = harness.run([harness.record(RESPONSES, result)])
    [stored] = out.values(RESULTS)
    assert stored["output_guard"]["redacted"] is True
    assert leaks(out, caplog) == []


def test_refused_requests_carry_no_personal_data_anywhere(
    harness: Harness[GuardSettings, Any], tenants: UnitTenants, caplog: pytest.LogCaptureFixture
) -> None:
    # Refused before analysis: the blocked copy withholds every free-text field.
    spoofed = request(tenant_id="globex")
    with caplog.at_level(logging.DEBUG):
        out = harness.run(
            [
                tenants.record(harness, spoofed, signer="acme"),  # acme claims globex
                harness.record(REQUESTS, request(request_id="r-unsigned")),  # no signature
            ]
        )
    [blocked] = out.values(BLOCKED)
    assert (blocked["tenant_id"], blocked["guard"]["reason"]) == ("acme", "tenant_mismatch")
    assert blocked["metadata"] == {} and blocked["user_id"] is None
    assert out.kinds() == ["UnauthenticatedRequest"]
    assert out.values(FINDINGS) == []
    assert leaks(out, caplog) == []


def test_undecodable_requests_are_dead_lettered_without_quoting_them(
    harness: Harness[GuardSettings, Any], caplog: pytest.LogCaptureFixture
) -> None:
    every_field = request(
        request_id=EMAIL, tenant_id=NAME, model=PHONE, operation=EMAIL, input_text=EMAIL
    )
    encoded = harness.encode(REQUESTS, every_field)
    raws = [
        encoded[:-3],  # truncated: the body ends inside the metadata
        encoded + EMAIL.encode(),  # bytes left after the record
        b"\x00\x00\x00\x00\x01" + EMAIL.encode(),  # read as a (corrupt) request
        EMAIL.encode(),  # not Avro at all
        orjson.dumps(every_field),  # JSON where Avro is expected
    ]
    with caplog.at_level(logging.DEBUG):
        out = harness.run([harness.record(REQUESTS, raw) for raw in raws])
    assert out.produced == []
    assert len(out.dead_letters) == len(raws)
    assert [d.raw for d in out.dead_letters] == raws
    assert leaks(out, caplog) == []


def test_the_search_finds_a_planted_value(
    harness: Harness[GuardSettings, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # The same search over a record guard did not touch finds the value: it can fail.
    out = harness.run([harness.record(REQUESTS, EMAIL.encode(), headers=[("x", EMAIL.encode())])])
    letter = out.dead_letters[0]
    assert leaks(out, caplog) == [f"{letter.topic} headers"] * 2
