"""Rate limits in guard: each tenant's requests and tokens per minute, whoever produced them.

The gateway limits calls before they reach Kafka, but a Kafka-native producer writes
to ``inference.requests`` directly. guard therefore applies every tenant's limit of
``schemas/rate_limits.yaml`` (``streams.llm.rate_limits``) to every request it reads:

* after the tenant is authenticated (the key that signed the request, never the
  payload's ``tenant_id``) and before the analysis (PII, injection), so a flood costs
  guard a signature check and a bucket lookup per request, not an NER pass;
* one bucket per tenant and limit: a tenant's flood empties its own buckets only;
* a request costs one request and its worst-case tokens (``worst_case_tokens``: the
  prompt's bound plus the most output it may ask for, the count guard also reserves
  against budgets), of the prompt as sent, since redaction comes later. guard never
  learns the actual usage (meter counts it, later) and so never settles: for guard, a
  tenant's tokens per minute bounds what its requests *may* use;
* a request over the limit is blocked with reason ``rate_limited``, its free text
  withheld (it was never analysed, so it cannot be redacted); which limit and how long
  to wait go to the request's span (``sluice.guard.rate_limit_detail``) and the
  tenant is counted in ``sluice_guard_rate_limited_total``.

Exactly once: guard decides a batch in a transaction, and a batch that is rolled back
is decided again. The requests a batch was charged for are remembered until a batch
commits, so the retry of a rolled-back batch is not charged a second time. Buckets
live in memory: a restarted guard starts every tenant with a full minute.
"""

from __future__ import annotations

from prometheus_client import Counter

from processors.guard.worst_case import worst_case_tokens
from streams.contracts.records import InferenceRequest
from streams.llm.model_catalog import ModelCatalog
from streams.llm.rate_limits import Charge, Rate, RateLimiter, RateLimits

#: The verdict reason (GuardVerdict.reason) of a request over its tenant's rate limit.
RATE_LIMITED = "rate_limited"

#: Tenants are authenticated (registered) identities: the label set is bounded by the registry.
RATE_LIMITED_REQUESTS = Counter(
    "sluice_guard_rate_limited_total",
    "Requests guard blocked as rate_limited, per tenant and the limit that refused them "
    "(requests or tokens per minute, schemas/rate_limits.yaml).",
    ["tenant", "limit"],
)


def detail(charge: Charge, rate: Rate) -> str:
    """Which limit refused a request and how long until it would be admitted; no values."""
    per_minute = rate.tokens_per_minute if charge.limit == "tokens" else rate.requests_per_minute
    return (
        f"{charge.limit} per minute limit of {per_minute} reached: "
        f"retry in {charge.retry_after_s:.1f} s"
    )


class RateGate:
    """``gate(request)`` → why its tenant may not make it now, or None (then it is charged).

    ``request.tenant_id`` must be the authenticated tenant. ``limiter`` holds the
    buckets; tests hand in one with their own clock.
    """

    def __init__(
        self, limits: RateLimits, models: ModelCatalog, limiter: RateLimiter | None = None
    ) -> None:
        self.limits = limits
        self.models = models
        self.limiter = limiter if limiter is not None else RateLimiter()
        # (tenant, request id) charged by batches not committed yet: a rolled-back batch
        # is decided again, and its requests must not pay twice.
        self._charged: set[tuple[str, str]] = set()

    def __call__(self, request: InferenceRequest) -> str | None:
        """Why ``request`` must be blocked as ``rate_limited``, or None once it is charged."""
        tenant = request.tenant_id
        rate = self.limits.for_tenant(tenant)
        key = (tenant, request.request_id)
        if rate.unlimited or key in self._charged:
            return None
        charge = self.limiter.acquire([(tenant, rate)], worst_case_tokens(request, self.models))
        if charge.admitted:
            self._charged.add(key)
            return None
        RATE_LIMITED_REQUESTS.labels(tenant, charge.limit or "requests").inc()
        return detail(charge, rate)

    def committed(self) -> None:
        """The batch is written: its requests are decided for good."""
        self._charged.clear()

    def rollback(self) -> None:
        """The batch is not written; its charges stand, so that its retry is not charged again.

        (The allowance is not handed back: the retry usually follows at once and finds
        its requests already charged; one that never comes costs its tenant that much of
        the minute.)
        """
