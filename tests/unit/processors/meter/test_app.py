"""meter's faust agents driven without Kafka: what they send where, and how it is signed.

The agents run over a stand-in stream; their output topics are replaced by recorders, so
each test sees exactly what meter would produce, headers included.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

faust = pytest.importorskip("faust")

from processors.guard.reservations import ReservationLedger, WorstCase  # noqa: E402
from processors.meter import app as meter_app  # noqa: E402
from processors.meter.settings import MeterSettings  # noqa: E402
from streams.contracts.catalog import load_catalog  # noqa: E402
from streams.contracts.records import InferenceResult, utcnow  # noqa: E402
from streams.errors import ConfigurationError  # noqa: E402
from streams.llm.budgets import BudgetConfig, BudgetRecord, BudgetStatus, BudgetView  # noqa: E402
from streams.llm.pricing import load_prices  # noqa: E402
from streams.runtime.signing import METER_BUDGET, Verifier, new_keypair  # noqa: E402
from streams.runtime.testing import MemoryRegistry  # noqa: E402
from streams.settings import PROJECT_ROOT, Settings  # noqa: E402

CATALOG = load_catalog(PROJECT_ROOT / "schemas")
PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
BUDGETS = BudgetConfig.model_validate(
    {"tenants": {"acme": {"hard": True, "day": {"usd": "0.000001"}}}}
)
PRIVATE, PUBLIC = new_keypair()


@dataclass
class Message:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = field(default_factory=lambda: datetime.now(UTC).timestamp())


@dataclass
class Event:
    message: Message


class Stream:
    def __init__(self, messages: list[Message]) -> None:
        self.messages = messages

    async def events(self) -> AsyncIterator[Event]:
        for message in self.messages:
            yield Event(message)


@dataclass
class Recorder:
    """A topic that keeps what is sent to it."""

    sent: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = field(default_factory=list)

    async def send(self, *, key: Any = None, value: Any = None, headers: Any = None) -> None:
        self.sent.append((key, value, list(headers or [])))


@pytest.fixture
def meter(monkeypatch, tmp_path: Path) -> meter_app.Meter:
    registry = MemoryRegistry.for_catalog(CATALOG)
    monkeypatch.setattr(meter_app.kafka, "registry", lambda settings: registry)
    config = MeterSettings(budget_signing_key=SecretStr(PRIVATE))
    built = meter_app.Meter(Settings(), config, CATALOG, PRICES, BUDGETS, datadir=tmp_path)
    built.topics = {name: Recorder() for name in built.topics}  # type: ignore[misc]
    built.dead_letters = {name: Recorder() for name in built.dead_letters}  # type: ignore[misc]
    built.table = {}  # type: ignore[assignment]  # the state is a mapping (see state.py)
    return built


def result_bytes(meter: meter_app.Meter, request_id: str, completed_at: datetime) -> bytes:
    result = InferenceResult(
        request_id=request_id,
        tenant_id="acme",
        model="gpt-4o-mini",
        status="ok",
        request_created_at=completed_at,
        completed_at=completed_at,
        input_tokens=1000,
        output_tokens=100,
    )
    return meter.codecs[meter_app.RESULTS].dumps(result.to_avro())


def price(meter: meter_app.Meter, values: list[bytes]) -> None:
    messages = [
        Message("inference.results", 0, offset, b"k", value, [("trace", b"t")])
        for offset, value in enumerate(values)
    ]
    asyncio.run(meter._price(Stream(messages)))  # type: ignore[arg-type]


def test_an_absurd_result_is_dead_lettered_and_the_next_one_metered(meter) -> None:
    absurd = result_bytes(meter, "r-far", datetime(9999, 12, 31, tzinfo=UTC))
    past = result_bytes(meter, "r-past", datetime(1970, 1, 2, tzinfo=UTC))
    good = result_bytes(meter, "r-good", utcnow())
    price(meter, [absurd, past, good])
    letters = meter.dead_letters[meter_app.RESULTS].sent  # type: ignore[attr-defined]
    assert [value for _, value, _ in letters] == [absurd, past], "original bytes, untouched"
    for _, _, headers in letters:
        named = dict(headers)
        assert named["sluice.error.class"] == b"ImplausibleTimestamp"
        assert named["sluice.error.processor"] == b"meter"
        assert b"completed_at" in named["sluice.error.message"]
        assert named["trace"] == b"t", "the original headers are kept"
    usage = meter.topics[meter_app.USAGE].sent  # type: ignore[attr-defined]
    assert len(usage) == 1 and usage[0][0] == b"acme"


def test_a_result_an_hour_ahead_is_metered(meter) -> None:
    price(meter, [result_bytes(meter, "r-soon", utcnow() + timedelta(hours=1))])
    assert meter.dead_letters[meter_app.RESULTS].sent == []  # type: ignore[attr-defined]
    assert len(meter.topics[meter_app.USAGE].sent) == 1  # type: ignore[attr-defined]


def test_every_budget_record_verifies_with_meters_public_key(meter) -> None:
    price(meter, [result_bytes(meter, f"r{i}", utcnow()) for i in range(3)])
    usage = meter.topics[meter_app.USAGE].sent  # type: ignore[attr-defined]
    messages = [
        Message("metering.usage", 0, offset, key, value)
        for offset, (key, value, _) in enumerate(usage)
    ]
    asyncio.run(meter._count(Stream(messages)))  # type: ignore[arg-type]
    budgets = meter.topics[meter_app.BUDGETS].sent  # type: ignore[attr-defined]
    assert len(budgets) == 3
    verifier = Verifier.from_settings([PUBLIC], "SLUICE_GUARD__BUDGET_PUBLIC_KEYS", METER_BUDGET)
    for key, value, headers in budgets:
        assert verifier.verify("metering.budgets", key, value, headers)
    # What guard's view does with them: keeps the newest, and acme is over its budget.
    view = BudgetView(Settings(), CATALOG, verifier=verifier, budgets=BUDGETS)
    codec = meter.codecs[meter_app.BUDGETS]

    def decode(raw: bytes) -> BudgetStatus:
        return BudgetStatus.from_avro(codec.loads(raw))

    kept = [
        view.receive(BudgetRecord(0, offset, key, value, headers), decode)
        for offset, (key, value, headers) in enumerate(budgets)
    ]
    assert kept == [True, True, True]
    assert "day usd budget" in (view.is_over_hard_budget("acme") or "")


def test_meter_refuses_to_start_without_its_budget_signing_key(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(meter_app.kafka, "registry", lambda settings: MemoryRegistry())
    with pytest.raises(ConfigurationError, match="SLUICE_METER__BUDGET_SIGNING_KEY"):
        meter_app.Meter(Settings(), MeterSettings(), CATALOG, PRICES, BUDGETS, datadir=tmp_path)


def test_the_future_bound_cannot_be_below_the_clock_skew() -> None:
    with pytest.raises(ValueError, match="SLUICE_METER__MAX_FUTURE_S"):
        MeterSettings(max_clock_skew_s=600, max_future_s=60)


def test_meters_signed_statuses_settle_guards_reservations(meter) -> None:
    ids = [f"r{i}" for i in range(3)]
    price(meter, [result_bytes(meter, request_id, utcnow()) for request_id in ids])
    usage = meter.topics[meter_app.USAGE].sent  # type: ignore[attr-defined]
    messages = [
        Message("metering.usage", 0, offset, key, value)
        for offset, (key, value, _) in enumerate(usage)
    ]
    asyncio.run(meter._count(Stream(messages)))  # type: ignore[arg-type]
    budgets = meter.topics[meter_app.BUDGETS].sent  # type: ignore[attr-defined]
    codec = meter.codecs[meter_app.BUDGETS]
    assert [codec.loads(value)["settled_request_ids"] for _, value, _ in budgets] == [
        ["r0"],
        ["r1"],
        ["r2"],
    ]
    ledger = ReservationLedger()
    for request_id in [*ids, "in-flight"]:
        ledger.reserve("acme", request_id, WorstCase(1, PRICES.cost("gpt-4o-mini", 1, 0).total))
    verifier = Verifier.from_settings([PUBLIC], "SLUICE_GUARD__BUDGET_PUBLIC_KEYS", METER_BUDGET)
    view = BudgetView(
        Settings(), CATALOG, verifier=verifier, budgets=BUDGETS, on_settled=ledger.settle
    )

    def decode(raw: bytes) -> BudgetStatus:
        return BudgetStatus.from_avro(codec.loads(raw))

    for offset, (key, value, headers) in enumerate(budgets):
        view.receive(BudgetRecord(0, offset, key, value, headers), decode)
    assert ledger.held("acme") == {"in-flight"}
