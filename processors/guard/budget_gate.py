"""Budget enforcement for guard: block a tenant's requests once meter says it is over.

meter publishes every tenant's spend to the compacted ``metering.budgets``, signed;
``streams.llm.budgets.BudgetView`` follows that topic in a background thread and
answers from memory, believing only records meter signed (``verifier``) and
enforcing only the tenants guard's own budget config calls hard (``budgets``).
This gate adds what guard needs on top: it fails closed.
While the view has not caught up with the topic (at start) or after its
consumer died, the gate raises ``TransientError``, so the runner retries the
batch later instead of letting an over-budget tenant through; a dead view is
replaced on the next call.
"""

from __future__ import annotations

import logging

from streams.contracts.catalog import Catalog
from streams.errors import TransientError
from streams.llm.budgets import BudgetConfig, BudgetView
from streams.runtime.signing import Verifier
from streams.settings import Settings

log = logging.getLogger("sluice.guard")


class BudgetGate:
    """``gate(tenant)`` → why the tenant must be blocked now, or None."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        verifier: Verifier,
        budgets: BudgetConfig,
        ready_timeout_s: float,
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._verifier = verifier
        self._budgets = budgets
        self._view = self._new_view()
        if not self._view.wait_ready(ready_timeout_s):
            # Not fatal: the first batch retries until the view has caught up.
            log.warning(
                "guard: budgets on %s not read within %.0f s; requests wait until they are",
                catalog.physical(self._view.topic),
                ready_timeout_s,
            )

    def __call__(self, tenant: str) -> str | None:
        """The reason ``tenant`` is over an enforced budget, or None."""
        view = self._view
        if view.error is not None:
            self._view = self._new_view()
            raise TransientError(f"budget view failed ({view.error!r}); restarted it")
        if not view.wait_ready(0):
            raise TransientError("budget view is still reading metering.budgets")
        return view.is_over_hard_budget(tenant)

    def _new_view(self) -> BudgetView:
        return BudgetView(
            self._settings, self._catalog, verifier=self._verifier, budgets=self._budgets
        ).start()

    def close(self) -> None:
        """Stop the view's consumer."""
        self._view.close()
