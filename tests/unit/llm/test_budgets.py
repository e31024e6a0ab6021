from datetime import UTC, datetime
from decimal import Decimal

import pytest

from streams.llm.budgets import (
    BudgetConfigError,
    BudgetStatus,
    BudgetView,
    PeriodSpend,
    load_budgets,
)
from streams.settings import PROJECT_ROOT, Settings

DAY = (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
MONTH = (datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))


def status(tenant="acme", *, hard=True, cost="10", cost_limit="50", tokens=0, version=1):
    return BudgetStatus(
        tenant_id=tenant,
        hard=hard,
        periods=(
            PeriodSpend("day", *DAY, tokens, Decimal(cost), None, Decimal(cost_limit), 1),
            PeriodSpend("month", *MONTH, tokens, Decimal(cost), 1000, None, 1),
        ),
        version=version,
        updated_at=DAY[0],
    )


def view(now):
    return BudgetView(Settings(), catalog=None, clock=lambda: now)  # type: ignore[arg-type]


def test_the_shipped_budgets_load():
    config = load_budgets(PROJECT_ROOT / "schemas" / "budgets.yaml")
    assert config.alert_thresholds_pct == (80, 100)
    assert config.for_tenant("acme").hard
    assert config.for_tenant("acme").day.usd == Decimal("50")
    assert config.for_tenant("someone-else") == config.default


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenants:\n  a:\n    day: {usd: -1}\n", "negative"),
        ("tenants:\n  a:\n    day: {tokens: 1.5}\n", "tokens"),
        ("tenants:\n  a:\n    week: {usd: 1}\n", "week"),
        ("alert_thresholds_pct: [0]\n", "above 0"),
    ],
)
def test_invalid_budgets_are_clear(tmp_path, text, message):
    path = tmp_path / "budgets.yaml"
    path.write_text(text)
    with pytest.raises(BudgetConfigError, match=message):
        load_budgets(path)


def test_over_hard_budget_only_while_the_period_lasts():
    during = view(datetime(2026, 3, 5, 12, tzinfo=UTC))
    during.update(status(cost="50.000000001"))
    assert "day usd budget of 50 reached" in (during.is_over_hard_budget("acme") or "")
    assert during.is_over_hard_budget("unknown") is None
    next_day = view(datetime(2026, 3, 6, 0, 0, 1, tzinfo=UTC))
    next_day.update(status(cost="50.000000001"))
    assert next_day.is_over_hard_budget("acme") is None


def test_under_budget_soft_budget_and_token_budget():
    v = view(datetime(2026, 3, 5, 12, tzinfo=UTC))
    v.update(status(cost="49.999999999"))
    assert v.is_over_hard_budget("acme") is None
    v.update(status("soft", hard=False, cost="60"))
    assert v.is_over_hard_budget("soft") is None
    v.update(status("tokens", tokens=1000))
    assert "month token budget of 1000 reached" in (v.is_over_hard_budget("tokens") or "")


def test_older_versions_never_replace_newer_ones():
    v = view(datetime(2026, 3, 5, 12, tzinfo=UTC))
    v.update(status(cost="60", version=5))
    v.update(status(cost="1", version=4))
    assert v.is_over_hard_budget("acme") is not None


def test_the_view_keeps_only_enforced_budgets():
    """meter publishes every metered tenant; guard only needs tenants with a hard budget."""
    v = view(datetime(2026, 3, 5, 12, tzinfo=UTC))
    for i in range(100_000):
        v.update(status(f"made-up-{i}", hard=False, version=1))
    v.update(status("acme", cost="60"))
    assert v.tenants() == ["acme"]
    v.update(status("acme", hard=False, cost="60", version=2))  # its budget is no longer hard
    assert v.tenants() == [] and v.is_over_hard_budget("acme") is None
