"""Signed inference requests for tests: guard serves only what a registered tenant signed.

Unit tests build a registry of their own (``UnitTenants``: throwaway keys, a registry
file in a temporary directory). Integration tests use the local stack's registry, the
one ``sluice run guard`` is given: ``register`` adds the tenants a test needs (before
guard starts: guard reads the registry once), ``client`` is an SDK client that signs for
one tenant, ``signed_headers`` signs bytes a test produces itself.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.contracts.catalog import Catalog
from streams.runtime.signing import TENANT_REQUEST, Signer, new_keypair
from streams.runtime.spec import Headers, InputRecord
from streams.runtime.tenants import TenantEntry, TenantRegistry
from streams.runtime.testing import Harness
from streams.sdk.client import SluiceClient
from streams.settings import Settings
from streams.stack.tenant_keys import ensure_tenants, tenant_signing_key

REQUESTS = "inference.requests"


def sign(private: str, key: bytes | str | None, value: bytes, topic: str = REQUESTS) -> Headers:
    """The tenant-signature headers of one record under ``private`` (base64)."""
    raw_key = key.encode() if isinstance(key, str) else key
    return Signer.from_secret(private, "a test tenant key", TENANT_REQUEST).headers(
        topic, raw_key, value
    )


@dataclass
class UnitTenants:
    """Tenants with throwaway keys, and the registry file guard would read for them."""

    directory: Path
    private_keys: dict[str, str] = field(default_factory=dict)
    registry: TenantRegistry = field(default_factory=TenantRegistry.empty)

    def add(self, *tenants: str) -> UnitTenants:
        """Register ``tenants`` (each with a new keypair and pseudonym key id); rewrite the file."""
        for tenant in tenants:
            private, public = new_keypair()
            self.private_keys[tenant] = private
            entry = TenantEntry(pseudonym_key_id=secrets.token_hex(16), public_keys=[public])
            self.registry = self.registry.with_tenant(tenant, entry)
        self.registry.save(self.path)
        return self

    @property
    def path(self) -> Path:
        """The registry file (``SLUICE_GUARD__TENANTS_PATH``)."""
        return self.directory / "tenants.yaml"

    def headers(self, tenant: str, key: bytes | str | None, value: bytes) -> Headers:
        """The headers of a record ``tenant``'s producer signed."""
        return sign(self.private_keys[tenant], key, value)

    def record(
        self,
        harness: Harness[Any, Any],
        value: Mapping[str, Any],
        *,
        signer: str | None = None,
        key: str | None = None,
    ) -> InputRecord:
        """A request record as ``signer`` (default: the request's own tenant) produced it."""
        raw = harness.encode(REQUESTS, value)
        tenant = signer if signer is not None else str(value["tenant_id"])
        return harness.record(REQUESTS, raw, key=key, headers=self.headers(tenant, key, raw))


def register(settings: Settings, tenants: Iterable[str]) -> None:
    """Register ``tenants`` in the local stack's registry (each once; start guard after)."""
    ensure_tenants(settings, tenants)


def signed_headers(
    settings: Settings, tenant: str, key: bytes | str | None, value: bytes
) -> Headers:
    """The headers ``tenant``'s producer puts on this record, signed with its local key.

    ``value`` is the exact bytes produced; the topic signed is the logical
    ``inference.requests`` (not the sandbox's physical name).
    """
    register(settings, [tenant])
    return sign(tenant_signing_key(settings, tenant), key, value)


def client(settings: Settings, catalog: Catalog | None, tenant: str, **kwargs: Any) -> SluiceClient:
    """An SDK client that signs ``tenant``'s requests with its key in the local stack."""
    register(settings, [tenant])
    return SluiceClient(
        settings, catalog, tenant=tenant, signing_key=tenant_signing_key(settings, tenant), **kwargs
    )
