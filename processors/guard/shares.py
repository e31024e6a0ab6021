"""Whose turn each record of guard's input waits for (``ProcessorSpec.share_of``).

The runner reads ahead and takes guard's batches fairly across tenants
(``streams.runtime.fair_window``), so it must know a record's tenant before guard
decodes it, and must not take it from anything a producer could forge:

* a request (``inference.requests``) is the tenant's whose registered key signed it,
  checked as guard checks it later (``TenantIdentity.authenticate``). A claimed
  ``tenant_id`` counts for nothing: a flood that claims to be another tenant is
  scheduled as its signer's. A record no tenant signed waits in the unattributed share
  (it is dead-lettered unread once its turn comes);
* a model response (``inference.responses``) is the ``tenant_id`` read from its bytes:
  only infer's principal may write that topic, and infer copies the tenant guard
  authenticated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.guard.identity import TenantIdentity
from streams.contracts.peek import TENANT_FIELD, FieldPeek
from streams.contracts.serde import AvroSerde
from streams.errors import UnauthenticatedRequest
from streams.llm.rate_limits import Shares
from streams.runtime.spec import InputRecord, Share

REQUESTS = "inference.requests"


@dataclass
class GuardShares:
    """Tells the runner whose turn a raw record of guard's input waits for."""

    identity: TenantIdentity
    shares: Shares
    tenant_peek: FieldPeek = field(default_factory=lambda: FieldPeek(TENANT_FIELD))

    def of(self, record: InputRecord, serde: AvroSerde) -> Share:
        """The record's share: its signer's for a request, its tenant's for a response."""
        if record.topic == REQUESTS:
            try:
                return self.shares.share(self.identity.authenticate(record))
            except UnauthenticatedRequest:
                return self.shares.share(None)
        return self.shares.share(self.tenant_peek.read(serde, record.raw, record.topic))
