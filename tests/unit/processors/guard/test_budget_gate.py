"""guard's budget gate with reservations: concurrent requests cannot overspend a hard budget."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from processors.guard.budget_gate import BudgetGate
from processors.guard.reservations import ReservationLedger
from processors.guard.worst_case import worst_case
from streams.contracts.catalog import load_catalog
from streams.contracts.records import InferenceRequest
from streams.errors import TransientError
from streams.llm.budgets import BudgetConfig, BudgetRecord, BudgetStatus, BudgetView, PeriodSpend
from streams.llm.model_catalog import load_models
from streams.llm.pricing import load_prices
from streams.runtime.signing import METER_BUDGET, Signer, Verifier, new_keypair
from streams.settings import PROJECT_ROOT, Settings
from tests.support.warehouse import memory_serde

TOPIC = "metering.budgets"
CATALOG = load_catalog(PROJECT_ROOT / "schemas")
SERDE = memory_serde(CATALOG, [TOPIC])
ENCODE = SERDE.encoder(TOPIC)
SCHEMA = CATALOG.value_schema(TOPIC)
MODELS = load_models()
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
METER_PRIVATE, METER_PUBLIC = new_keypair()
METER = Signer.from_secret(METER_PRIVATE, "SLUICE_METER__BUDGET_SIGNING_KEY", METER_BUDGET)
NOON = datetime(2026, 3, 5, 12, tzinfo=UTC)
DAY = (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC))
PROMPT = "Summarise the ticket about billing."


def request(request_id: str, tenant: str = "acme", max_tokens: int = 500) -> InferenceRequest:
    return InferenceRequest(
        request_id=request_id,
        tenant_id=tenant,
        model="textgen",
        input_text=PROMPT,
        created_at=NOON,
        max_tokens=max_tokens,
    )


WORST = worst_case(request("any"), MODELS, PRICES)
#: Two worst cases fit, a third does not.
CONFIG = BudgetConfig.model_validate(
    {
        "tenants": {
            "acme": {"hard": True, "day": {"usd": str(WORST.cost * 2 + Decimal("0.00001"))}},
            "tokens": {"hard": True, "month": {"tokens": WORST.tokens * 2}},
            "soft": {"hard": False, "day": {"usd": "0.000000001"}},
        }
    }
)


def decode(raw: bytes) -> BudgetStatus:
    return BudgetStatus.from_avro(SERDE.decode(raw, SCHEMA, topic=TOPIC))


def status(tenant: str, *, cost: str, tokens: int = 0, version: int, settled=()) -> BudgetStatus:
    limits = CONFIG.for_tenant(tenant)
    return BudgetStatus(
        tenant_id=tenant,
        hard=True,
        periods=(PeriodSpend("day", *DAY, tokens, Decimal(cost), None, limits.day.usd, version),),
        version=version,
        updated_at=NOON,
        settled_request_ids=tuple(settled),
    )


def record(st: BudgetStatus, *, signer: Signer | None = METER, offset: int = 0) -> BudgetRecord:
    key = st.tenant_id.encode()
    value = ENCODE(st.to_avro())
    headers = signer.headers(TOPIC, key, value) if signer is not None else []
    return BudgetRecord(partition=0, offset=offset, key=key, value=value, headers=headers)


def make_gate(cap: int = 100) -> tuple[BudgetGate, list[BudgetView]]:
    views: list[BudgetView] = []
    verifier = Verifier.from_settings(
        [METER_PUBLIC], "SLUICE_GUARD__BUDGET_PUBLIC_KEYS", METER_BUDGET
    )

    def fed_view(gate: BudgetGate) -> BudgetView:
        # What the real factory builds, without Kafka: records are fed to ``receive``.
        view = BudgetView(
            gate.settings,
            gate.catalog,
            verifier=gate.verifier,
            budgets=gate.budgets,
            clock=lambda: NOON,
            on_settled=gate.ledger.settle,
        )
        view._ready.set()  # caught up: there is nothing to read
        views.append(view)
        return view

    gate = BudgetGate(
        Settings(),
        CATALOG,
        verifier=verifier,
        budgets=CONFIG,
        ready_timeout_s=0.01,
        models=MODELS,
        prices=PRICES,
        ledger=ReservationLedger(ttl_s=900, max_per_tenant=cap),
        view_factory=fed_view,
    )
    return gate, views


def blocks(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("sluice_budget_reservation_blocks_total", {"reason": reason})
        or 0.0
    )


def test_concurrent_requests_pass_only_while_their_worst_cases_fit() -> None:
    gate, _ = make_gate()
    before = blocks("limit")
    decisions = [gate(request(f"r{i}")) for i in range(5)]
    assert decisions[:2] == [None, None]
    for reason in decisions[2:]:
        assert reason is not None
        assert reason.startswith("day usd budget of")
        assert "reserving this request's worst case" in reason
        assert PROMPT not in reason
    assert gate.ledger.held("acme") == {"r0", "r1"}
    assert blocks("limit") == before + 3


def test_a_token_limit_is_reserved_against_too() -> None:
    gate, _ = make_gate()
    assert gate(request("t0", "tokens")) is None
    assert gate(request("t1", "tokens")) is None
    reason = gate(request("t2", "tokens"))
    assert reason is not None and reason.startswith("month token budget of")


def test_tenants_without_a_hard_budget_reserve_nothing() -> None:
    gate, _ = make_gate()
    for i in range(5):
        assert gate(request(f"s{i}", "soft")) is None
        assert gate(request(f"n{i}", "no-budget")) is None
    assert len(gate.ledger) == 0


def test_a_retried_request_is_decided_again_without_counting_itself_twice() -> None:
    gate, _ = make_gate()
    assert gate(request("r0")) is None
    assert gate(request("r1")) is None
    assert gate(request("r1")) is None, "its own reservation is replaced, not added"
    assert gate.ledger.held("acme") == {"r0", "r1"}


def test_a_rolled_back_batch_frees_its_reservations() -> None:
    gate, _ = make_gate()
    assert gate(request("r0")) is None
    gate.committed()
    assert gate(request("r1")) is None
    gate.rollback()
    assert gate(request("r2")) is None
    assert gate.ledger.held("acme") == {"r0", "r2"}


def test_meters_signed_settlement_frees_the_budget_for_more() -> None:
    gate, [view] = make_gate()
    assert [gate(request(f"r{i}")) for i in range(3)][2] is not None
    # meter counted r0 and r1, far below their worst case.
    view.receive(record(status("acme", cost="0.000001", version=1, settled=["r0"])), decode)
    view.receive(record(status("acme", cost="0.000002", version=2, settled=["r1"])), decode)
    assert len(gate.ledger) == 0
    assert gate(request("r3")) is None
    assert gate(request("r4")) is None
    assert gate(request("r5")) is not None


def test_an_older_signed_status_still_settles_its_request() -> None:
    gate, [view] = make_gate()
    assert gate(request("r0")) is None
    view.receive(record(status("acme", cost="0.000002", version=5, settled=["r9"])), decode)
    # Replayed after a crash: older than the status held, which already counts r0.
    assert not view.receive(
        record(status("acme", cost="0.000001", version=4, settled=["r0"])), decode
    )
    assert gate.ledger.held("acme") == set()


@pytest.mark.parametrize("signer", [None, Signer.from_secret(new_keypair()[0], "x", METER_BUDGET)])
def test_a_forged_status_settles_nothing(signer: Signer | None) -> None:
    gate, [view] = make_gate()
    assert gate(request("r0")) is None
    assert gate(request("r1")) is None
    forged = status("acme", cost="0", version=2**62, settled=["r0", "r1"])
    assert not view.receive(record(forged, signer=signer), decode)
    assert gate.ledger.held("acme") == {"r0", "r1"}
    assert gate(request("r2")) is not None


def test_meters_signature_covers_the_settled_ids() -> None:
    gate, [view] = make_gate()
    assert gate(request("r0")) is None
    genuine = record(status("acme", cost="0.000001", version=1, settled=["other"]))
    altered = replace(
        genuine, value=ENCODE(status("acme", cost="0.000001", version=1, settled=["r0"]).to_avro())
    )
    assert not view.receive(altered, decode)
    assert gate.ledger.held("acme") == {"r0"}


def test_at_the_cap_a_tenant_is_blocked_until_some_settle() -> None:
    gate, [view] = make_gate(cap=1)
    before = blocks("cap")
    assert gate(request("r0", max_tokens=1)) is None
    reason = gate(request("r1", max_tokens=1))
    assert reason is not None and "MAX_RESERVATIONS_PER_TENANT" in reason
    assert blocks("cap") == before + 1
    view.receive(record(status("acme", cost="0", version=1, settled=["r0"])), decode)
    assert gate(request("r1", max_tokens=1)) is None


def test_a_spent_budget_still_blocks_as_reached() -> None:
    gate, [view] = make_gate()
    view.receive(record(status("acme", cost="1", version=1)), decode)
    reason = gate(request("r0"))
    assert reason is not None and "reached" in reason
    assert len(gate.ledger) == 0


def test_a_failed_view_fails_closed_and_is_replaced() -> None:
    gate, views = make_gate()
    views[0].error = RuntimeError("broker gone")
    with pytest.raises(TransientError):
        gate(request("r0"))
    assert len(views) == 2
    assert gate(request("r0")) is None
