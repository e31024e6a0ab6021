"""Budget reservations: what guard let through that meter has not counted yet.

meter's spend (``metering.budgets``) trails the requests guard passes by the
whole model round trip, so a tenant that sends many requests at once could pass
them all before the first one is metered. Guard therefore reserves each passed
request's worst-case cost (``processors.guard.worst_case``) of a tenant with a
hard budget, and admits a request only while

    meter's signed spend + the tenant's outstanding reservations + its worst case

stays within every limit of the current day and month (``refusal``). A
reservation ends when

* meter settles it: a signed status lists the request id among the ones it
  counted (``settled_request_ids``), so the real cost is in the spend now;
* it expires (``ttl_s``): a request that never produces a usage event (dropped,
  dead-lettered by infer) must not hold the tenant's budget forever;
* the batch that made it is rolled back (its outputs were never written).

A reservation is keyed by (tenant, request id): a batch decided again after a
retry replaces its reservations, never doubles them. A tenant holds at most
``max_per_tenant``; past that its next request is blocked (fail closed) until
some settle or expire. Only registered tenants with a hard budget reserve, so
the number of tenants held is bounded by the tenant registry.

The ledger lives in guard's memory: after a restart it is empty, so at most what
was in flight when guard stopped can overspend a budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from streams.contracts import money
from streams.llm.budgets import PERIODS, TenantBudget
from streams.runtime import metrics

#: Default lifetime of a reservation (GuardSettings.reservation_ttl_s).
DEFAULT_TTL_S = 900.0
#: Default cap per tenant (GuardSettings.max_reservations_per_tenant).
DEFAULT_MAX_PER_TENANT = 10_000


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most one request (or a sum of them) can add to a tenant's spend."""

    tokens: int
    cost: Decimal

    def __add__(self, other: WorstCase) -> WorstCase:
        return WorstCase(self.tokens + other.tokens, money.to_scale(self.cost + other.cost))

    @property
    def nothing(self) -> bool:
        """True when the request cannot cost anything (nothing to reserve)."""
        return self.tokens <= 0 and self.cost <= 0


NOTHING = WorstCase(0, money.ZERO)


@dataclass(frozen=True, slots=True)
class Spend:
    """meter's signed spend of a tenant in the current period."""

    tokens: int
    cost: Decimal


def refusal(
    budget: TenantBudget,
    spend: Callable[[str], Spend],
    outstanding: WorstCase,
    worst: WorstCase,
) -> str | None:
    """Why reserving ``worst`` on top of the spend and ``outstanding`` breaks a limit, or None.

    ``spend(period)`` is meter's spend in the current ``period``; the limits are guard's
    own (its budget config). A request that lands exactly on a limit is admitted. The
    reason names the period, the metric and the limit, never what the request holds.
    """
    for period in PERIODS:
        limits = budget.limits(period)
        spent = spend(period)
        if limits.tokens is not None and (
            spent.tokens + outstanding.tokens + worst.tokens > limits.tokens
        ):
            return (
                f"{period} token budget of {limits.tokens}: reserving this request's worst "
                "case on top of the spend and the requests in flight would exceed it"
            )
        if limits.usd is not None and spent.cost + outstanding.cost + worst.cost > limits.usd:
            return (
                f"{period} usd budget of {money.plain(limits.usd)}: reserving this request's worst "
                "case on top of the spend and the requests in flight would exceed it"
            )
    return None


@dataclass(frozen=True, slots=True)
class _Held:
    worst: WorstCase
    at: float  # the ledger's clock when it was reserved


class ReservationLedger:
    """Outstanding reservations per tenant.

    Thread-safe: meter's settlements arrive on the budget view's thread, reservations
    on guard's.
    """

    def __init__(
        self,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_per_tenant: int = DEFAULT_MAX_PER_TENANT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_per_tenant < 1:
            raise ValueError("a reservation needs a positive lifetime and a cap of at least 1")
        self.ttl_s = ttl_s
        self.max_per_tenant = max_per_tenant
        self._clock = clock
        self._lock = threading.Lock()
        # Per tenant, in the order reserved (a replaced one moves to the end), so the
        # oldest, the first to expire, is always first.
        self._held: dict[str, dict[str, _Held]] = {}
        # What the batch in hand changed: (tenant, request id, what it replaced).
        self._journal: list[tuple[str, str, _Held | None]] = []
        self._count = 0

    # -- guard's thread ----------------------------------------------------------
    def outstanding(self, tenant: str, *, excluding: str | None = None) -> WorstCase:
        """The sum of the tenant's live reservations, except ``excluding``'s (its own retry)."""
        with self._lock:
            held = self._expire(tenant)
            total = NOTHING
            for request_id, reservation in held.items():
                if request_id != excluding:
                    total = total + reservation.worst
            return total

    def full(self, tenant: str, request_id: str) -> bool:
        """True when the tenant holds its cap and ``request_id`` would be one more."""
        with self._lock:
            held = self._expire(tenant)
            return request_id not in held and len(held) >= self.max_per_tenant

    def reserve(self, tenant: str, request_id: str, worst: WorstCase) -> None:
        """Hold ``worst`` for the request; a reservation it already had is replaced."""
        with self._lock:
            held = self._held.setdefault(tenant, {})
            previous = held.pop(request_id, None)
            held[request_id] = _Held(worst, self._clock())
            self._journal.append((tenant, request_id, previous))
            self._changed(+1 if previous is None else 0)

    def committed(self) -> None:
        """The batch's outputs are written: its reservations stay."""
        with self._lock:
            self._journal.clear()

    def rollback(self) -> None:
        """The batch was not written: undo its reservations (the retry makes them again)."""
        with self._lock:
            for tenant, request_id, previous in reversed(self._journal):
                held = self._held.setdefault(tenant, {})
                was_held = held.pop(request_id, None) is not None
                if previous is not None:
                    held[request_id] = previous
                self._changed(int(previous is not None) - int(was_held))
                if not held:
                    self._held.pop(tenant, None)
            self._journal.clear()

    # -- the budget view's thread -------------------------------------------------
    def settle(self, tenant: str, request_ids: Iterable[str]) -> int:
        """Drop the reservations of requests meter counted; how many were held."""
        with self._lock:
            held = self._held.get(tenant)
            if held is None:
                return 0
            dropped = sum(held.pop(request_id, None) is not None for request_id in request_ids)
            if not held:
                del self._held[tenant]
            self._changed(-dropped)
            return dropped

    # -- reading -------------------------------------------------------------------
    def __len__(self) -> int:
        """Reservations held in all (expired ones included until next looked at)."""
        with self._lock:
            return self._count

    def held(self, tenant: str) -> set[str]:
        """The request ids the tenant holds reservations for (expired ones dropped)."""
        with self._lock:
            return set(self._expire(tenant))

    # -- under the lock ------------------------------------------------------------
    def _expire(self, tenant: str) -> dict[str, _Held]:
        held = self._held.get(tenant)
        if held is None:
            return {}
        deadline = self._clock() - self.ttl_s
        expired = 0
        while held:
            request_id, oldest = next(iter(held.items()))
            if oldest.at > deadline:
                break
            del held[request_id]
            expired += 1
        if expired:
            metrics.BUDGET_RESERVATIONS_EXPIRED.inc(expired)
            self._changed(-expired)
        if not held:
            del self._held[tenant]
            return {}
        return held

    def _changed(self, delta: int) -> None:
        self._count += delta
        metrics.BUDGET_RESERVATIONS.set(self._count)
