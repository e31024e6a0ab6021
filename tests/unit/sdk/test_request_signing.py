"""The SDK signs each inference request with its tenant's key, and guard's check accepts it."""

from __future__ import annotations

from typing import Any

import pytest

from processors.guard.identity import TenantIdentity
from processors.guard.policy import Policy
from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.errors import ConfigurationError, UnauthenticatedRequest
from streams.runtime.signing import SigningKeyError, new_keypair
from streams.runtime.spec import InputRecord
from streams.runtime.tenants import TenantEntry, TenantRegistry
from streams.runtime.testing import MemoryRegistry
from streams.sdk.client import SluiceClient, TenantMismatchError
from streams.settings import Settings
from tests.support.guard import GUARD_DIR


class RecordingProducer:
    """Keeps what the client produces (the SDK's only contact with Kafka)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float = 0) -> int:
        return 0


def client_for(tenant: str | None, key: str | None, settings: Settings | None = None):
    client = SluiceClient(settings or Settings(), tenant=tenant, signing_key=key)
    client.serde = AvroSerde(MemoryRegistry.for_catalog(client.catalog), client.catalog)
    client.producer = RecordingProducer()  # type: ignore[assignment]
    return client


def consumed(sent: dict[str, Any]) -> InputRecord:
    """The record guard would consume, decoded as the runner decodes it."""
    headers = [(k, v if isinstance(v, bytes) else v.encode()) for k, v in sent["headers"]]
    key = sent["key"].encode() if isinstance(sent["key"], str) else sent["key"]
    return InputRecord(
        topic="inference.requests",
        partition=0,
        offset=0,
        key=key,
        value=None,
        raw=sent["value"],
        headers=headers,
        timestamp_ms=0,
    )


def registry_of(**publics: str) -> TenantRegistry:
    return TenantRegistry(
        {
            tenant: TenantEntry(pseudonym_key_id=f"{i:032x}", public_keys=[public])
            for i, (tenant, public) in enumerate(publics.items(), start=1)
        }
    )


def test_a_sent_request_carries_a_signature_guard_verifies() -> None:
    private, public = new_keypair()
    client = client_for("acme", private)
    request = InferenceRequest.new("acme", "textgen", "Where is my parcel?")
    client.send_request(request)
    [sent] = client.producer.sent  # type: ignore[attr-defined]
    identity = TenantIdentity.of(registry_of(acme=public), Policy.load(GUARD_DIR / "policy.yaml"))
    record = consumed(sent)
    assert identity.authenticate(record) == "acme"
    # The signature covers the value: one changed byte and it no longer verifies.
    tampered = InputRecord(**{**_fields(record), "raw": sent["value"][:-1] + b"\x01"})
    with pytest.raises(UnauthenticatedRequest, match="does not verify"):
        identity.authenticate(tampered)
    # Another tenant's registry key does not make it that tenant's.
    other = TenantIdentity.of(
        registry_of(globex=new_keypair()[1]), Policy.load(GUARD_DIR / "policy.yaml")
    )
    with pytest.raises(UnauthenticatedRequest, match="unknown key"):
        other.authenticate(record)


def _fields(record: InputRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in InputRecord.__slots__}


def test_a_request_for_another_tenant_is_refused_before_it_is_sent() -> None:
    client = client_for("acme", new_keypair()[0])
    with pytest.raises(TenantMismatchError, match="tenant_mismatch") as caught:
        client.send_request(InferenceRequest.new("NorthBank", "textgen", "hi"))
    assert "NorthBank" not in str(caught.value)  # the request's text is not echoed
    assert client.producer.sent == []  # type: ignore[attr-defined]


def test_requests_need_a_tenant_and_its_key() -> None:
    client = client_for(None, None)
    with pytest.raises(ConfigurationError, match="SLUICE_TENANT__SIGNING_KEY"):
        client.send_request(InferenceRequest.new("acme", "textgen", "hi"))
    with pytest.raises(SigningKeyError, match="SLUICE_TENANT__SIGNING_KEY"):
        client_for("acme", "not-a-key")


def test_the_tenant_and_key_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    private, _ = new_keypair()
    monkeypatch.setenv("SLUICE_TENANT__ID", "acme")
    monkeypatch.setenv("SLUICE_TENANT__SIGNING_KEY", private)
    settings = Settings()
    assert private not in repr(settings)
    client = client_for(None, None, settings)
    client.send_request(InferenceRequest.new("acme", "textgen", "hi"))
    [sent] = client.producer.sent  # type: ignore[attr-defined]
    assert {name for name, _ in sent["headers"]} >= {
        "sluice.tenant.signature",
        "sluice.tenant.key-id",
    }
