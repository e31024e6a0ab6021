"""Budget reservations: the ledger, the admission arithmetic and a request's worst case."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from processors.guard.reservations import (
    NOTHING,
    ReservationLedger,
    Spend,
    WorstCase,
    refusal,
)
from processors.guard.worst_case import SPECIAL_TOKENS, prompt_tokens, worst_case
from streams.contracts.records import InferenceRequest
from streams.llm.budgets import TenantBudget
from streams.llm.model_catalog import load_models
from streams.llm.pricing import load_prices
from streams.settings import PROJECT_ROOT

MODELS = load_models()
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
ONE = WorstCase(100, Decimal("0.001"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ledger(ttl_s: float = 60.0, cap: int = 3) -> tuple[ReservationLedger, Clock]:
    clock = Clock()
    return ReservationLedger(ttl_s=ttl_s, max_per_tenant=cap, clock=clock), clock


def gauge() -> float:
    return REGISTRY.get_sample_value("sluice_budget_reservations") or 0.0


# -- the ledger ----------------------------------------------------------------------
def test_reservations_add_up_per_tenant() -> None:
    held, _ = ledger()
    held.reserve("acme", "r1", ONE)
    held.reserve("acme", "r2", WorstCase(50, Decimal("0.0005")))
    held.reserve("globex", "r1", ONE)
    assert held.outstanding("acme") == WorstCase(150, Decimal("0.0015"))
    assert held.outstanding("globex") == ONE
    assert held.outstanding("nobody") == NOTHING
    assert len(held) == 3
    assert gauge() == 3


def test_a_retried_request_replaces_its_reservation() -> None:
    held, _ = ledger()
    held.reserve("acme", "r1", ONE)
    held.reserve("acme", "r1", WorstCase(7, Decimal("0.000007")))
    assert held.outstanding("acme") == WorstCase(7, Decimal("0.000007"))
    assert len(held) == 1
    # Its own earlier reservation does not count against its new decision.
    assert held.outstanding("acme", excluding="r1") == NOTHING


def test_settling_drops_only_the_named_requests_of_that_tenant() -> None:
    held, _ = ledger()
    held.reserve("acme", "r1", ONE)
    held.reserve("acme", "r2", ONE)
    held.reserve("globex", "r1", ONE)
    assert held.settle("acme", ["r1", "unknown"]) == 1
    assert held.held("acme") == {"r2"}
    assert held.held("globex") == {"r1"}, "another tenant's same id is not settled"
    assert held.settle("nobody", ["r1"]) == 0
    assert len(held) == 2


def test_reservations_expire_after_the_ttl() -> None:
    held, clock = ledger(ttl_s=60)
    held.reserve("acme", "old", ONE)
    clock.now += 30
    held.reserve("acme", "young", ONE)
    clock.now += 29.9
    assert held.held("acme") == {"old", "young"}
    expired_before = REGISTRY.get_sample_value("sluice_budget_reservations_expired_total") or 0
    clock.now += 0.1  # "old" is 60 s old
    assert held.outstanding("acme") == ONE
    assert held.held("acme") == {"young"}
    assert REGISTRY.get_sample_value("sluice_budget_reservations_expired_total") == (
        expired_before + 1
    )
    clock.now += 30
    assert held.outstanding("acme") == NOTHING
    assert len(held) == 0


def test_a_replaced_reservation_lives_from_its_new_time() -> None:
    held, clock = ledger(ttl_s=60)
    held.reserve("acme", "r1", ONE)
    clock.now += 50
    held.reserve("acme", "r1", ONE)
    clock.now += 50
    assert held.held("acme") == {"r1"}


def test_the_cap_counts_live_reservations_and_not_the_request_itself() -> None:
    held, clock = ledger(ttl_s=60, cap=2)
    held.reserve("acme", "r1", ONE)
    assert not held.full("acme", "r2")
    held.reserve("acme", "r2", ONE)
    assert held.full("acme", "r3")
    assert not held.full("acme", "r1"), "a retry of a held request replaces it"
    assert not held.full("globex", "r1"), "per tenant"
    held.settle("acme", ["r1"])
    assert not held.full("acme", "r3")
    held.reserve("acme", "r3", ONE)
    clock.now += 61
    assert not held.full("acme", "r4"), "expired ones free the cap"


def test_rollback_undoes_the_batch_and_commit_keeps_it() -> None:
    held, _ = ledger()
    held.reserve("acme", "kept", ONE)
    held.committed()
    held.reserve("acme", "kept", WorstCase(1, Decimal("0.000001")))  # retried
    held.reserve("acme", "new", ONE)
    held.rollback()
    assert held.held("acme") == {"kept"}
    assert held.outstanding("acme") == ONE, "the committed reservation is back"
    assert len(held) == 1
    held.reserve("acme", "new", ONE)
    held.committed()
    held.rollback()  # nothing in hand
    assert held.held("acme") == {"kept", "new"}


def test_a_ledger_needs_a_lifetime_and_a_cap() -> None:
    with pytest.raises(ValueError, match="lifetime"):
        ReservationLedger(ttl_s=0)
    with pytest.raises(ValueError, match="cap"):
        ReservationLedger(max_per_tenant=0)


# -- admission arithmetic ---------------------------------------------------------------
def budget(period: str, **limits: object) -> TenantBudget:
    return TenantBudget.model_validate({"hard": True, period: limits})


def spent(period: str, tokens: int = 0, cost: str = "0"):
    def spend(asked: str) -> Spend:
        return Spend(tokens, Decimal(cost)) if asked == period else Spend(0, Decimal(0))

    return spend


@pytest.mark.parametrize("period", ["day", "month"])
def test_usd_admission_at_the_boundary(period: str) -> None:
    limits = budget(period, usd="0.010")
    outstanding = WorstCase(0, Decimal("0.004"))
    worst = WorstCase(0, Decimal("0.003"))
    # 0.003 spent + 0.004 in flight + 0.003 = exactly the limit: admitted.
    assert refusal(limits, spent(period, cost="0.003"), outstanding, worst) is None
    over = refusal(limits, spent(period, cost="0.003000001"), outstanding, worst)
    assert over is not None
    assert over.startswith(f"{period} usd budget of 0.01:")
    assert "would exceed" in over


@pytest.mark.parametrize("period", ["day", "month"])
def test_token_admission_at_the_boundary(period: str) -> None:
    limits = budget(period, tokens=1000)
    assert (
        refusal(
            limits,
            spent(period, tokens=400),
            WorstCase(300, Decimal(0)),
            WorstCase(300, Decimal(0)),
        )
        is None
    )
    over = refusal(
        limits, spent(period, tokens=401), WorstCase(300, Decimal(0)), WorstCase(300, Decimal(0))
    )
    assert over is not None and over.startswith(f"{period} token budget of 1000:")


def test_every_limit_of_both_periods_is_checked() -> None:
    both = TenantBudget.model_validate(
        {"hard": True, "day": {"tokens": 10_000}, "month": {"usd": "1"}}
    )
    month_spent = spent("month", cost="0.999")
    assert refusal(both, month_spent, NOTHING, WorstCase(1, Decimal("0.001"))) is None
    reason = refusal(both, month_spent, NOTHING, WorstCase(1, Decimal("0.0011")))
    assert reason is not None and reason.startswith("month usd budget of 1:")


def test_no_limit_admits_anything() -> None:
    unlimited = TenantBudget(hard=True)
    huge = WorstCase(10**12, Decimal(10**6))
    assert refusal(unlimited, spent("day", 10**12, "1000000"), huge, huge) is None


# -- a request's worst case --------------------------------------------------------------
def request(model: str, text: str = "hello", max_tokens: int | None = None) -> InferenceRequest:
    return InferenceRequest(
        request_id="r1",
        tenant_id="acme",
        model=model,
        input_text=text,
        created_at=datetime(2026, 3, 5, tzinfo=UTC),
        max_tokens=max_tokens,
    )


def test_prompt_tokens_are_bounded_by_bytes_and_the_models_limit() -> None:
    assert prompt_tokens("hello", 512) == 5 + SPECIAL_TOKENS
    assert prompt_tokens("é" * 10, 512) == 20 + SPECIAL_TOKENS
    assert prompt_tokens("x" * 10_000, 512) == 512


def test_a_completion_reserves_its_max_tokens_at_the_catalog_price() -> None:
    textgen = MODELS.get("textgen")
    price = PRICES.models["textgen"]
    worst = worst_case(request("textgen", "hello", max_tokens=100), MODELS, PRICES)
    prompt = 5 + SPECIAL_TOKENS
    assert worst.tokens == prompt + 100
    assert worst.cost == prompt * price.input_cost_per_token + 100 * price.output_cost_per_token
    # Without max_tokens, what infer asks the model for: its default.
    default = worst_case(request("textgen", "hello"), MODELS, PRICES)
    assert default.tokens == prompt + (textgen.default_max_tokens or 0)
    # More than the model allows is refused by infer: never more than the limit.
    capped = worst_case(request("textgen", "hello", max_tokens=10**9), MODELS, PRICES)
    assert capped.tokens == prompt + (textgen.max_output_tokens or 0)


def test_an_embedding_reserves_its_prompt_only() -> None:
    worst = worst_case(request("minilm", "hello"), MODELS, PRICES)
    assert worst.tokens == 5 + SPECIAL_TOKENS
    assert worst.cost == (5 + SPECIAL_TOKENS) * PRICES.models["minilm"].input_cost_per_token


def test_a_model_infer_does_not_serve_costs_nothing() -> None:
    assert worst_case(request("not-served"), MODELS, PRICES).nothing
