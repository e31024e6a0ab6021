"""Whose turn a raw record of guard's input waits for: its signer's, never its claim."""

from __future__ import annotations

from pathlib import Path

import pytest

from processors.guard.identity import TenantIdentity
from processors.guard.policy import Policy
from processors.guard.shares import GuardShares
from streams.contracts.catalog import catalog_for
from streams.contracts.records import InferenceRequest, InferenceResult, utcnow
from streams.contracts.serde import AvroSerde
from streams.llm.rate_limits import UNATTRIBUTED, Shares
from streams.runtime.spec import InputRecord, Share
from streams.runtime.testing import MemoryRegistry
from streams.settings import PROJECT_ROOT, Settings
from tests.support.tenants import UnitTenants

REQUESTS = "inference.requests"
RESPONSES = "inference.responses"


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> UnitTenants:
    return UnitTenants(tmp_path_factory.mktemp("tenants")).add("acme", "globex")


@pytest.fixture(scope="module")
def serde() -> AvroSerde:
    catalog = catalog_for(Settings())
    return AvroSerde(MemoryRegistry.for_catalog(catalog), catalog)  # type: ignore[arg-type]


@pytest.fixture
def shares(tenants: UnitTenants) -> GuardShares:
    policy = Policy.load(Path(PROJECT_ROOT / "schemas" / "guard" / "policy.yaml"))
    return GuardShares(TenantIdentity.of(tenants.registry, policy), Shares(tenants={"globex": 3}))


def _request(
    serde: AvroSerde, tenants: UnitTenants, claimed: str, signer: str | None
) -> InputRecord:
    request = InferenceRequest.new(claimed, "minilm", "hello")
    raw = serde.encoder(REQUESTS)(request.to_avro())
    key = request.request_id.encode()
    headers = tenants.headers(signer, key, raw) if signer else []
    return InputRecord(REQUESTS, 0, 0, key, raw, raw, headers, 0)


def test_a_request_is_its_signers_whatever_tenant_it_claims(
    shares: GuardShares, serde: AvroSerde, tenants: UnitTenants
) -> None:
    assert shares.of(_request(serde, tenants, "acme", "acme"), serde) == Share("acme", 1)
    assert shares.of(_request(serde, tenants, "acme", "globex"), serde) == Share("globex", 3)


def test_an_unsigned_request_waits_in_the_unattributed_share(
    shares: GuardShares, serde: AvroSerde, tenants: UnitTenants
) -> None:
    assert shares.of(_request(serde, tenants, "globex", None), serde) == Share(UNATTRIBUTED)


def test_a_model_response_is_its_tenants_read_from_the_bytes(
    shares: GuardShares, serde: AvroSerde
) -> None:
    result = InferenceResult(
        request_id="r-1",
        tenant_id="globex",
        model="minilm",
        status="ok",
        request_created_at=utcnow(),
        completed_at=utcnow(),
    )
    raw = serde.encoder(RESPONSES)(result.to_avro())
    record = InputRecord(RESPONSES, 0, 0, b"r-1", raw, raw, [], 0)
    assert shares.of(record, serde) == Share("globex", 3)
    garbage = InputRecord(RESPONSES, 0, 1, b"r-2", b"\x00junk", b"\x00junk", [], 0)
    assert shares.of(garbage, serde) == Share(UNATTRIBUTED)
