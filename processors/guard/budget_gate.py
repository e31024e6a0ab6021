"""Budget enforcement for guard: block a tenant's requests once meter says it is over.

meter publishes every tenant's spend to the compacted ``metering.budgets``, signed;
``streams.llm.budgets.BudgetView`` follows that topic in a background thread and
answers from memory, believing only records meter signed (``verifier``) and
enforcing only the tenants guard's own budget config calls hard (``budgets``).
This gate adds what guard needs on top:

* reservations (``processors.guard.reservations``): a request of a hard-budget
  tenant passes only if meter's spend, the tenant's requests in flight and this
  request's worst case (``processors.guard.worst_case``) stay within every limit,
  and it then reserves its worst case until meter counts it; the view hands every
  request id a signed status settles to the ledger;
* it fails closed.
While the view has not caught up with the topic (at start) or after its
consumer died, the gate raises ``TransientError``, so the runner retries the
batch later instead of letting an over-budget tenant through; a dead view is
replaced on the next call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from processors.guard.reservations import ReservationLedger, Spend, refusal
from processors.guard.worst_case import worst_case
from streams.contracts.catalog import Catalog
from streams.contracts.records import InferenceRequest
from streams.errors import TransientError
from streams.llm.budgets import BudgetConfig, BudgetView
from streams.llm.model_catalog import ModelCatalog
from streams.llm.pricing import PriceTable
from streams.runtime import metrics
from streams.runtime.signing import Verifier
from streams.settings import Settings

log = logging.getLogger("sluice.guard")


#: The reason a request at its tenant's cap of reservations is blocked with.
AT_CAP = (
    "too many requests of this tenant in flight (SLUICE_GUARD__MAX_RESERVATIONS_PER_TENANT): "
    "wait until meter counts some"
)

ViewFactory = Callable[["BudgetGate"], BudgetView]


def _started_view(gate: BudgetGate) -> BudgetView:
    return BudgetView(
        gate.settings,
        gate.catalog,
        verifier=gate.verifier,
        budgets=gate.budgets,
        on_settled=gate.ledger.settle,
    ).start()


class BudgetGate:
    """``gate(request)`` → why the request must be blocked now, or None (then it is reserved).

    ``ledger`` holds the reservations; ``models`` and ``prices`` give each request's
    worst case. ``view_factory`` makes (and starts) the budget view; tests hand in one
    that is fed records directly.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        verifier: Verifier,
        budgets: BudgetConfig,
        ready_timeout_s: float,
        models: ModelCatalog,
        prices: PriceTable,
        ledger: ReservationLedger,
        view_factory: ViewFactory = _started_view,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.verifier = verifier
        self.budgets = budgets
        self.models = models
        self.prices = prices
        self.ledger = ledger
        self._view_factory = view_factory
        self._view = self._new_view()
        if not self._view.wait_ready(ready_timeout_s):
            # Not fatal: the first batch retries until the view has caught up.
            log.warning(
                "guard: budgets on %s not read within %.0f s; requests wait until they are",
                catalog.physical(self._view.topic),
                ready_timeout_s,
            )

    def __call__(self, request: InferenceRequest) -> str | None:
        """Why ``request`` (as guard lets it through) must be blocked, or None.

        None reserves the request's worst case when its tenant's budget is hard.
        """
        view = self._view
        if view.error is not None:
            self._view = self._new_view()
            raise TransientError(f"budget view failed ({view.error!r}); restarted it")
        if not view.wait_ready(0):
            raise TransientError("budget view is still reading metering.budgets")
        tenant = request.tenant_id
        reached = view.is_over_hard_budget(tenant)
        if reached is not None or not view.enforced(tenant):
            return reached
        worst = worst_case(request, self.models, self.prices)
        if worst.nothing:
            return None  # infer refuses it with nothing metered: nothing to hold
        if self.ledger.full(tenant, request.request_id):
            metrics.BUDGET_RESERVATION_BLOCKS.labels("cap").inc()
            return AT_CAP
        reason = refusal(
            self.budgets.for_tenant(tenant),
            lambda period: Spend(*view.spend(tenant, period)),
            self.ledger.outstanding(tenant, excluding=request.request_id),
            worst,
        )
        if reason is not None:
            metrics.BUDGET_RESERVATION_BLOCKS.labels("limit").inc()
            return reason
        self.ledger.reserve(tenant, request.request_id, worst)
        return None

    def committed(self) -> None:
        """The batch is written: its reservations stay until meter counts them."""
        self.ledger.committed()

    def rollback(self) -> None:
        """The batch is not written: drop the reservations it made."""
        self.ledger.rollback()

    def _new_view(self) -> BudgetView:
        return self._view_factory(self)

    def close(self) -> None:
        """Stop the view's consumer."""
        self._view.close()
