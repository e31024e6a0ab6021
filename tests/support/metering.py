"""Helpers for the metering and analytics tests: synthetic results and what they must add up to.

Each test works in its own sandbox (topic prefix, consumer groups, meter state
topics) with its own ClickHouse directory and uuid-named tenants.
"""

from __future__ import annotations

import random
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import TopicPartition

from streams.contracts.records import InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.llm.budgets import BudgetView, load_budgets
from streams.runtime import kafka
from streams.runtime.signing import METER_BUDGET, Verifier
from streams.settings import PROJECT_ROOT, Settings
from streams.stack import sandbox
from streams.stack.secrets import budget_key_paths, ensure_budget_keys
from streams.warehouse import clickhouse
from tests.support.tenants import client as signing_client
from tests.support.world import World, process_log, produce, read_all, wait_for

MODELS = ("gpt-4o-mini", "textgen", "minilm")


def metering_world(
    base: Settings, tmp_path: Path, *, budgets: dict[str, Any] | None = None
) -> World:
    """A sandbox of the whole catalog, with its own budgets and its own ClickHouse."""
    box = sandbox.create(base, tmp_path)
    if budgets is not None:
        (box.schemas / "budgets.yaml").write_text(yaml.safe_dump(budgets))
    box.apply()
    url = f"chdb://{tmp_path / 'clickhouse'}"
    settings = box.settings.model_copy(
        update={"clickhouse": box.settings.clickhouse.model_copy(update={"url": url})}
    )
    return World(sandbox.Sandbox(settings, box.catalog, box.schemas, box.suffix))


def budget_view(world: World) -> BudgetView:
    """A view of the world's ``metering.budgets`` as guard holds one.

    It believes what meter signed with the local stack's budget key (the key `sluice run
    meter` signs with) and enforces the tenants the world's own budgets.yaml calls hard.
    """
    ensure_budget_keys(world.settings)  # `sluice up` made it; a stack that predates it
    public = budget_key_paths(world.settings)[1].read_text(encoding="ascii").strip()
    verifier = Verifier.from_settings([public], "the local stack's budget key", METER_BUDGET)
    budgets = load_budgets(world.schemas / "budgets.yaml")
    return BudgetView(world.settings, world.catalog, verifier=verifier, budgets=budgets)


def tenants(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"tenant-{tag}-{i}" for i in range(n)]


def synthetic_results(
    tenant_ids: list[str], count: int, *, start: datetime, step_ms: int = 37, seed: int = 7
) -> list[InferenceResult]:
    """A known stream: tokens by type, 10% errors, some cached prompt tokens, spread in time."""
    rng = random.Random(seed)
    results = []
    for i in range(count):
        at = start + timedelta(milliseconds=i * step_ms)
        ok = rng.random() >= 0.1
        input_tokens = rng.randint(1, 4000) if ok else 0
        results.append(
            InferenceResult(
                request_id=f"{uuid.uuid4()}",
                tenant_id=tenant_ids[i % len(tenant_ids)],
                model=MODELS[rng.randrange(len(MODELS))],
                status="ok" if ok else "error",
                error_code=None if ok else "backend_rejected",
                request_created_at=at - timedelta(milliseconds=rng.randint(5, 500)),
                completed_at=at,
                input_tokens=input_tokens,
                cached_input_tokens=rng.randint(0, input_tokens // 2) if ok else 0,
                output_tokens=rng.randint(0, 600) if ok else 0,
                e2e_ms=float(rng.randint(5, 900)),
                queue_ms=float(rng.randint(0, 50)),
                inference_ms=float(rng.randint(1, 400)),
            )
        )
    return results


def gpt4o_results(tenant_ids: list[str], per_tenant: int) -> list[InferenceResult]:
    """gpt-4o results of 1,000 prompt + 100 output tokens: 0.0035 USD each, now."""
    now = datetime.now(UTC)
    return [
        InferenceResult(
            request_id=f"{tenant}-{i}",
            tenant_id=tenant,
            model="gpt-4o",
            status="ok",
            request_created_at=now,
            completed_at=now + timedelta(milliseconds=i),
            input_tokens=1000,
            output_tokens=100,
        )
        for tenant in tenant_ids
        for i in range(per_tenant)
    ]


def send_results(settings: Settings, serde: AvroSerde, results: list[InferenceResult]) -> None:
    encode = serde.encoder("inference.results")
    produce(
        settings,
        serde.catalog.physical("inference.results"),
        [encode(r.to_avro()) for r in results],
        [r.request_id.encode() for r in results],
    )


# -- what the stream must add up to, computed here from the YAML, independently of meter --
def _prices() -> dict[str, dict[str, Decimal]]:
    raw = yaml.safe_load((PROJECT_ROOT / "schemas" / "prices.yaml").read_text())["models"]
    table = {}
    for model, entry in raw.items():
        price = {
            k: Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v))
            for k, v in entry.items()
        }
        price.setdefault("cache_read_input_token_cost", price["input_cost_per_token"])
        price.setdefault("output_cost_per_token", Decimal(0))
        table[model] = price
    return table


def cost_of(result: InferenceResult) -> Decimal:
    price = _prices()[result.model]
    fresh = result.input_tokens - result.cached_input_tokens
    return (
        fresh * price["input_cost_per_token"]
        + result.cached_input_tokens * price["cache_read_input_token_cost"]
        # A response-cache hit generated nothing: its output tokens cost nothing.
        + (0 if result.cache_hit else result.output_tokens) * price["output_cost_per_token"]
    )


@dataclass
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    cost: Decimal = Decimal(0)

    def add(self, result: InferenceResult) -> None:
        self.requests += 1
        self.errors += result.status != "ok"
        self.input_tokens += result.input_tokens
        self.cached_input_tokens += result.cached_input_tokens
        self.output_tokens += result.output_tokens
        self.cost += cost_of(result)

    def row(self) -> tuple[int, int, int, int, int, Decimal]:
        return (
            self.requests,
            self.errors,
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
            self.cost,
        )


def expected(results: list[InferenceResult], key: Any) -> dict[Any, Totals]:
    totals: dict[Any, Totals] = defaultdict(Totals)
    for result in results:
        totals[key(result)].add(result)
    return dict(totals)


def recent_start(span: timedelta) -> datetime:
    """A start a little in the past such that ``span`` from it stays in today (UTC).

    Meter's windows are final two days after they end (wall clock), so test data
    must be recent; one UTC day keeps each tenant in one budget period.
    """
    now = datetime.now(UTC)
    start = now - span - timedelta(minutes=1)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return max(start, midnight + timedelta(seconds=1))


def minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


# -- reading back ------------------------------------------------------------------------
def query(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` in the world's ClickHouse (through the sink while it runs)."""
    warehouse = clickhouse.open_warehouse(settings, database=settings.clickhouse.database)
    try:
        return warehouse.query(sql).rows
    finally:
        warehouse.close()


def in_list(values: list[str]) -> str:
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def latest(
    settings: Settings, serde: AvroSerde, topic: str, key: Any, keep: Any
) -> dict[Any, dict[str, Any]]:
    """The highest-version record per key among the committed records of ``topic``."""
    schema = serde.catalog.value_schema(topic)
    topic = serde.catalog.physical(topic)
    consumer = kafka.consumer(settings, f"reader-{uuid.uuid4().hex}")
    try:
        ends = kafka.end_offsets(consumer, [topic])
        consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in ends])
        best: dict[Any, dict[str, Any]] = {}
        remaining = {tp.partition: end for tp, end in ends.items() if end > 0}
        while remaining:
            for message in consumer.consume(2000, 1.0):
                if message.error() is not None:
                    continue
                if message.offset() + 1 >= remaining.get(message.partition(), 0):
                    remaining.pop(message.partition(), None)
                value = serde.decode(message.value(), schema)
                if not keep(value):
                    continue
                k = key(value)
                if k not in best or value["version"] >= best[k]["version"]:
                    best[k] = value
            for tp in consumer.position([TopicPartition(topic, p) for p in list(remaining)]):
                if tp.offset >= remaining.get(tp.partition, 0):
                    remaining.pop(tp.partition, None)
        return best
    finally:
        consumer.close()


def read_values(
    settings: Settings, serde: AvroSerde, topic: str, keep: Any
) -> list[dict[str, Any]]:
    """Every committed record of ``topic`` that ``keep`` selects, decoded."""
    from tests.support.world import read_all

    schema = serde.catalog.value_schema(topic)
    values = [
        serde.decode(msg.value(), schema)
        for msg in read_all(settings, serde.catalog.physical(topic), expect=0, timeout=10, settle=2)
    ]
    return [v for v in values if keep(v)]


def send_request(world: World, tenant: str) -> str:
    """A small gpt-4o request, signed as ``tenant``; its request id."""
    request = InferenceRequest.new(tenant, "gpt-4o", "Summarise the ticket about billing.")
    with signing_client(world.settings, world.catalog, tenant) as client:
        client.send_request(request)
    return request.request_id


def guard_outcome(world: World, serde: AvroSerde, request_id: str) -> tuple[str, str | None]:
    """Where guard sent the request, and the reason it gave."""
    found: dict[str, tuple[str, str | None]] = {}

    def seen() -> bool:
        for name in ("inference.requests.safe", "inference.requests.blocked"):
            for message in read_all(
                world.settings, world.topic(name), expect=0, timeout=5, settle=1
            ):
                if message.key() == request_id.encode():
                    value = serde.decode(message.value(), world.catalog.value_schema(name))
                    found[request_id] = (name, value["guard"]["reason"])
        return request_id in found

    wait_for(seen, 180, f"guard's verdict on {request_id}\n{process_log(world)[-3000:]}")
    return found[request_id]


def guard_decides(world: World, serde: AvroSerde, tenant: str) -> tuple[str, str | None]:
    """Send ``tenant`` a request; where guard sent it and the reason it gave."""
    return guard_outcome(world, serde, send_request(world, tenant))
