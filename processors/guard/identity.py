"""Who sent a request: the tenant whose key signed it, never the ``tenant_id`` it claims.

guard checks every record of ``inference.requests`` before anything else:

1. its ``sluice.tenant.signature`` must verify (scheme ``TENANT_REQUEST``: the logical
   topic, the record key and the exact value bytes, so ``tenant_id``, ``request_id``
   and ``created_at`` inside the value are covered) under a public key of the tenant
   registry. No signature, a malformed one, an unknown key or a bad signature:
   ``UnauthenticatedRequest``, a dead letter with the original bytes. The tenant is
   unknown, so nobody is billed.
2. the key names the authenticated tenant. A request whose ``tenant_id`` is another
   (claiming someone else's laxer policy or budget, or a wrong-case ``NorthBank``) is
   blocked as ``tenant_mismatch`` and attributed to the tenant that signed it.
3. the policy must admit the authenticated tenant (an override, or the default when
   the policy file allows it); otherwise the request is blocked as ``unknown_tenant``.

A refused request is blocked without analysis: its free text (prompt, user id,
source, metadata) is withheld, not redacted, since it is not going anywhere and
analysing a spoofer's text would only spend guard's time. The claimed tenant id is not
copied anywhere: it is text an attacker chose.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from processors.guard.engine import BLOCK, withheld
from processors.guard.policy import Policy
from streams.contracts.records import GuardVerdict, InferenceRequest, utcnow
from streams.errors import UnauthenticatedRequest
from streams.runtime.signing import UnverifiedError, Verifier
from streams.runtime.spec import InputRecord
from streams.runtime.tenants import TenantRegistry

TENANT_MISMATCH = "tenant_mismatch"
UNKNOWN_TENANT = "unknown_tenant"


@dataclass(frozen=True)
class TenantIdentity:
    """The registry's keys and the policy's admission rule, built once at start."""

    registry: TenantRegistry
    policy: Policy
    verifier: Verifier

    @classmethod
    def of(cls, registry: TenantRegistry, policy: Policy) -> TenantIdentity:
        """The identity check of ``registry`` under ``policy``."""
        return cls(registry, policy, registry.verifier())

    def authenticate(self, record: InputRecord) -> str:
        """The registered tenant whose key signed ``record``; ``UnauthenticatedRequest`` if none.

        The signature is checked over the bytes as consumed, before the decoded value is
        trusted. Reasons name the header or key id at fault, never a value.
        """
        try:
            key_id = self.verifier.verify(record.topic, record.key, record.raw, record.headers)
        except UnverifiedError as exc:
            raise UnauthenticatedRequest(str(exc)) from None
        tenant = self.registry.tenant_of_key(key_id)
        if tenant is None:  # the verifier holds only registry keys; kept for safety
            raise UnauthenticatedRequest(f"key {key_id} belongs to no registered tenant")
        return tenant

    def check(self, record: InputRecord) -> tuple[InferenceRequest, InferenceRequest | None]:
        """The request ``record`` holds, and its blocked copy when its tenant may not make it.

        ``UnauthenticatedRequest`` (raised) when no registered tenant signed it.
        """
        tenant = self.authenticate(record)
        request = InferenceRequest.from_avro(record.value)
        return request, self.refusal(request, tenant)

    def refusal(self, request: InferenceRequest, tenant: str) -> InferenceRequest | None:
        """The blocked copy of a request ``tenant`` signed that it may not make; None if it may."""
        if request.tenant_id != tenant:
            return blocked_copy(request, tenant, TENANT_MISMATCH, self.policy.version)
        if not self.policy.admits(tenant):
            return blocked_copy(request, tenant, UNKNOWN_TENANT, self.policy.version)
        return None


def blocked_copy(
    request: InferenceRequest, tenant: str, reason: str, policy_version: str
) -> InferenceRequest:
    """``request`` blocked for ``reason``, attributed to ``tenant``, its free text withheld."""
    verdict = GuardVerdict(
        policy_version=policy_version,
        action=BLOCK,
        redacted=True,
        checked_at=utcnow(),
        reason=reason,
    )
    return dataclasses.replace(
        request,
        tenant_id=tenant,
        input_text=withheld(reason),
        user_id=None,
        source=withheld(reason),
        metadata={},
        guard=verdict,
    )
