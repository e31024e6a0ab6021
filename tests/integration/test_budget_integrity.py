"""Budgets no producer can forge, and meter's clock bounds, on the real stack.

* guard believes only the ``metering.budgets`` records meter signed: a forged record
  (a huge version, ``hard: false``, no spend; unsigned or wrongly signed) lifts no block,
  not even for a guard that reads the topic again from the start;
* a result dated absurdly (year 9999) is dead-lettered with its original bytes, and
  meter goes on metering the next results;
* a result dated an hour ahead is metered now, in the current period;
* requests sent at once cannot overspend a hard budget: guard reserves each passed
  request's worst case until meter's signed status settles it.

Each test runs `sluice run meter` / `sluice run guard` as child processes in its own
sandbox (topics, groups, meter state, budgets file), as tests/integration/test_metering.py.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

import pytest

from processors.guard.worst_case import worst_case
from streams.contracts.records import InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.llm.budgets import BudgetStatus, PeriodSpend
from streams.llm.model_catalog import load_models
from streams.llm.pricing import load_prices
from streams.runtime import kafka
from streams.runtime.signing import METER_BUDGET, Signer, new_keypair
from streams.stack.secrets import budget_key_paths
from tests.support import metering as m
from tests.support.tenants import client as signing_client
from tests.support.tenants import register
from tests.support.world import (
    World,
    process_log,
    processor_logs,
    produce,
    read_all,
    start_processor,
    stop_all,
    wait_for,
)

GUARD_ENV = {"SLUICE_GUARD__EMBEDDER": "none", "SLUICE_GUARD__HASH_SECRET": "x" * 32}


@pytest.fixture
def budget_world(stack, tmp_path):
    tenants = m.tenants(2)
    w = m.metering_world(
        stack,
        tmp_path,
        budgets={
            "tenants": {
                tenants[0]: {"hard": True, "day": {"usd": "0.01"}},
                tenants[1]: {"hard": True, "day": {"usd": "1000"}},
            },
        },
    )
    w.tenants = tenants  # type: ignore[attr-defined]
    register(w.settings, tenants)  # guard reads the tenant registry when it starts
    yield w
    stop_all(w)


@pytest.fixture
def world(stack, tmp_path):
    w = m.metering_world(stack, tmp_path)
    yield w
    stop_all(w)


def serde_of(world: World) -> AvroSerde:
    return AvroSerde(kafka.registry(world.settings), world.catalog)


def forged_status(tenant: str) -> BudgetStatus:
    """What a forger writes: the newest version there could be, soft, and nothing spent."""
    now = datetime.now(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return BudgetStatus(
        tenant_id=tenant,
        hard=False,
        periods=(PeriodSpend("day", day, day + timedelta(days=1), 0, Decimal(0), None, None, 0),),
        version=2**62,
        updated_at=now,
    )


def test_a_forged_budget_record_lifts_no_block(budget_world):
    world = budget_world
    over, under = world.tenants  # type: ignore[attr-defined]
    serde = serde_of(world)
    start_processor(world, "guard", **GUARD_ENV)
    start_processor(world, "meter")
    assert m.guard_decides(world, serde, over)[0] == "inference.requests.safe"

    # Five gpt-4o results: 0.0175 USD, over the tenant's hard 0.01 USD a day.
    m.send_results(world.settings, serde, m.gpt4o_results([over], 5))
    with m.budget_view(world) as view:
        wait_for(lambda: view.is_over_hard_budget(over) is not None, 180, "meter's status")
    time.sleep(2)  # guard's own view follows the topic within a poll
    assert m.guard_decides(world, serde, over) == (
        "inference.requests.blocked",
        "budget_exceeded",
    )

    # The forgeries, each the latest record of the tenant's key (what compaction keeps).
    topic = world.topic("metering.budgets")
    key = over.encode()
    value = serde.encoder("metering.budgets")(forged_status(over).to_avro())
    stranger = Signer.from_secret(new_keypair()[0], "a forger's key", METER_BUDGET)
    meter_private = budget_key_paths(world.settings)[0].read_text(encoding="ascii").strip()
    meter = Signer.from_secret(meter_private, "meter's key", METER_BUDGET)
    genuine_headers = meter.headers("metering.budgets", key, b"another value")
    produce(
        world.settings,
        topic,
        [value, value, value],
        [key, key, key],
        [
            [],  # unsigned
            stranger.headers("metering.budgets", key, value),  # a key guard does not hold
            genuine_headers,  # meter's signature, copied from another value
        ],
    )
    time.sleep(3)  # guard has read them by now
    assert m.guard_decides(world, serde, over) == (
        "inference.requests.blocked",
        "budget_exceeded",
    )
    assert m.guard_decides(world, serde, under)[0] == "inference.requests.safe"
    guard_log = processor_logs(world, "guard")[0]
    for reason in ("unsigned", "unknown_key", "bad_signature"):
        assert f"budget view: ignored {topic}" in guard_log and reason in guard_log, reason

    # A guard that reads the topic again from the start, forgeries last, still blocks.
    stop_all(world)
    world.processes.clear()
    start_processor(world, "guard", **GUARD_ENV)
    assert m.guard_decides(world, serde, over) == (
        "inference.requests.blocked",
        "budget_exceeded",
    )
    with m.budget_view(world) as fresh:
        assert fresh.wait_ready(60)
        assert fresh.is_over_hard_budget(over) is not None
        assert fresh.rejected == {"unsigned": 1, "unknown_key": 1, "bad_signature": 1}


def result(tenant: str, request_id: str, completed_at: datetime) -> InferenceResult:
    return InferenceResult(
        request_id=request_id,
        tenant_id=tenant,
        model="gpt-4o",
        status="ok",
        request_created_at=min(completed_at, datetime.now(UTC)),
        completed_at=completed_at,
        input_tokens=1000,
        output_tokens=100,
    )


def metered_request_ids(world: World, serde: AvroSerde, tenant: str) -> set[str]:
    return {
        v["request_id"]
        for v in m.read_values(
            world.settings, serde, "metering.usage", lambda v: v["tenant_id"] == tenant
        )
    }


def test_an_absurd_result_is_dead_lettered_and_meter_meters_the_next(world):
    (tenant,) = m.tenants(1)
    serde = serde_of(world)
    encode = serde.encoder("inference.results")
    absurd = result(tenant, f"{tenant}-far", datetime(9999, 12, 31, 23, 0, tzinfo=UTC))
    good = result(tenant, f"{tenant}-good", datetime.now(UTC))
    absurd_bytes = encode(absurd.to_avro())
    produce(
        world.settings,
        world.topic("inference.results"),
        [absurd_bytes, encode(good.to_avro())],
        [absurd.request_id.encode(), good.request_id.encode()],
    )
    meter = start_processor(world, "meter")
    wait_for(
        lambda: good.request_id in metered_request_ids(world, serde, tenant),
        180,
        f"the good result metered\n{process_log(world)[-3000:]}",
    )
    letters = [
        message
        for message in read_all(
            world.settings, world.topic("inference.results.dlq"), expect=1, timeout=60
        )
        if message.key() == absurd.request_id.encode()
    ]
    assert len(letters) == 1
    assert letters[0].value() == absurd_bytes, "the original bytes, for a replay"
    headers = dict(letters[0].headers() or [])
    assert headers["sluice.error.class"] == b"ImplausibleTimestamp"
    assert headers["sluice.error.processor"] == b"meter"
    assert b"completed_at" in headers["sluice.error.message"]
    assert absurd.request_id not in metered_request_ids(world, serde, tenant)

    # meter is still up and meters what comes next.
    later = result(tenant, f"{tenant}-later", datetime.now(UTC))
    m.send_results(world.settings, serde, [later])
    wait_for(
        lambda: later.request_id in metered_request_ids(world, serde, tenant),
        120,
        "the next result metered",
    )
    assert meter.poll() is None, process_log(world)[-3000:]
    budgets = m.latest(
        world.settings,
        serde,
        "metering.budgets",
        key=lambda v: v["tenant_id"],
        keep=lambda v: v["tenant_id"] == tenant,
    )
    for period in budgets[tenant]["periods"]:
        assert period["requests"] == 2  # the good ones only
        assert period["period_end"].year < 9999


def test_a_result_an_hour_ahead_is_metered_in_the_current_period(world):
    (tenant,) = m.tenants(1)
    serde = serde_of(world)
    ahead = result(tenant, f"{tenant}-soon", datetime.now(UTC) + timedelta(hours=1))
    start_processor(world, "meter")
    m.send_results(world.settings, serde, [ahead])
    wait_for(
        lambda: ahead.request_id in metered_request_ids(world, serde, tenant),
        180,
        f"the result metered\n{process_log(world)[-3000:]}",
    )
    time.sleep(2)
    now = datetime.now(UTC)
    budgets = m.latest(
        world.settings,
        serde,
        "metering.budgets",
        key=lambda v: v["tenant_id"],
        keep=lambda v: v["tenant_id"] == tenant,
    )
    day = next(p for p in budgets[tenant]["periods"] if p["period"] == "day")
    assert day["requests"] == 1
    # Metered at its arrival: the day that holds meter's now, even across midnight.
    assert day["period_start"] <= now < day["period_end"] + timedelta(minutes=1)
    windows = m.read_values(
        world.settings, serde, "metering.windows", lambda v: v["tenant_id"] == tenant
    )
    assert windows and all(w["window_start"] <= now for w in windows), "no future window"
    assert world.processes[0].poll() is None
    letters = read_all(
        world.settings, world.topic("inference.results.dlq"), expect=0, timeout=5, settle=1
    )
    assert all(msg.key() != ahead.request_id.encode() for msg in letters), "not dead-lettered"


# -- reservations ------------------------------------------------------------------------
RESERVED_PROMPT = "Summarise the ticket about billing."
RESERVED_MAX_TOKENS = 500


def textgen_request(tenant: str) -> InferenceRequest:
    return InferenceRequest.new(tenant, "textgen", RESERVED_PROMPT, max_tokens=RESERVED_MAX_TOKENS)


def send_signed(world: World, request: InferenceRequest) -> str:
    with signing_client(world.settings, world.catalog, request.tenant_id) as client:
        return client.send_request(request)


def small_result(tenant: str, request_id: str) -> InferenceResult:
    """What infer would report for a short answer: far below the request's worst case."""
    now = datetime.now(UTC)
    return InferenceResult(
        request_id=request_id,
        tenant_id=tenant,
        model="textgen",
        status="ok",
        request_created_at=now,
        completed_at=now,
        input_tokens=10,
        output_tokens=5,
    )


@pytest.fixture
def reservation_world(stack, tmp_path):
    (tenant,) = m.tenants(1)
    prices = load_prices(stack.schemas_dir / "prices.yaml")
    worst = worst_case(textgen_request(tenant), load_models(), prices)
    assert worst.cost > 0
    # Room for two worst cases and half of a third: the third request must not fit.
    limit = (worst.cost * 5 / 2).quantize(Decimal("0.000000001"), rounding=ROUND_DOWN)
    w = m.metering_world(
        stack, tmp_path, budgets={"tenants": {tenant: {"hard": True, "day": {"usd": f"{limit:f}"}}}}
    )
    w.tenant = tenant  # type: ignore[attr-defined]
    register(w.settings, [tenant])  # guard reads the tenant registry when it starts
    yield w
    stop_all(w)


def test_concurrent_requests_cannot_overspend_a_hard_budget(reservation_world):
    world = reservation_world
    tenant = world.tenant  # type: ignore[attr-defined]
    serde = serde_of(world)
    start_processor(world, "guard", **GUARD_ENV)

    # Five at once, before meter has counted anything (meter is not even running).
    requests = [textgen_request(tenant) for _ in range(5)]
    with ThreadPoolExecutor(max_workers=5) as pool:
        sent = list(pool.map(lambda r: send_signed(world, r), requests))
    assert sent == [r.request_id for r in requests]
    outcomes = {rid: m.guard_outcome(world, serde, rid) for rid in sent}
    passed = [rid for rid, (topic, _) in outcomes.items() if topic == "inference.requests.safe"]
    blocked = [outcome for outcome in outcomes.values() if outcome[0] != "inference.requests.safe"]
    assert len(passed) == 2, outcomes
    assert blocked == [("inference.requests.blocked", "budget_exceeded")] * 3, outcomes

    # meter counts the two that passed, far below their worst case, and settles them.
    start_processor(world, "meter")
    m.send_results(world.settings, serde, [small_result(tenant, rid) for rid in passed])

    def counted() -> bool:
        statuses = m.latest(
            world.settings,
            serde,
            "metering.budgets",
            key=lambda v: v["tenant_id"],
            keep=lambda v: v["tenant_id"] == tenant,
        )
        status = statuses.get(tenant)
        return status is not None and all(p["requests"] == 2 for p in status["periods"])

    wait_for(counted, 180, f"meter's status of the two requests\n{process_log(world)[-3000:]}")
    settled = {
        rid
        for v in m.read_values(
            world.settings, serde, "metering.budgets", lambda v: v["tenant_id"] == tenant
        )
        for rid in v["settled_request_ids"]
    }
    assert settled == set(passed)
    time.sleep(3)  # guard's view follows the topic within a poll

    # Their reservations are gone: two more worst cases fit again, a third does not.
    first = m.guard_outcome(world, serde, send_signed(world, textgen_request(tenant)))
    second = m.guard_outcome(world, serde, send_signed(world, textgen_request(tenant)))
    third = m.guard_outcome(world, serde, send_signed(world, textgen_request(tenant)))
    assert first[0] == "inference.requests.safe"
    assert second[0] == "inference.requests.safe"
    assert third == ("inference.requests.blocked", "budget_exceeded")
