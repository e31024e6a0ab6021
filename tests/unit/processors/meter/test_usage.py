"""What a result costs: a response-cache hit is priced at the cached input price."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from processors.meter.usage import Usage, usage_of
from streams.contracts.records import InferenceResult
from streams.llm.pricing import load_prices
from streams.settings import PROJECT_ROOT

PRICES = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
T0 = datetime(2026, 3, 5, 10, 0, tzinfo=UTC)


def result(model: str, *, cache_hit: bool, cached: int = 0) -> InferenceResult:
    return InferenceResult(
        request_id="r1",
        tenant_id="acme",
        model=model,
        status="ok",
        request_created_at=T0,
        completed_at=T0,
        input_tokens=1000,
        output_tokens=200,
        cached_input_tokens=cached,
        cache_hit=cache_hit,
    )


def test_a_fresh_answer_pays_input_and_output() -> None:
    usage = usage_of(result("textgen", cache_hit=False), PRICES)
    assert (usage.input_cost, usage.cached_input_cost, usage.output_cost) == (
        Decimal("0.000200000"),
        Decimal("0.000000000"),
        Decimal("0.000160000"),
    )
    assert usage.cost == Decimal("0.000360000") and usage.cache_hit is False


def test_a_cache_hit_pays_the_cached_price_for_its_prompt_and_nothing_for_its_output() -> None:
    # textgen: cache_read_input_token_cost 0.00000005 per token (schemas/prices.yaml).
    usage = usage_of(result("textgen", cache_hit=True, cached=1000), PRICES)
    assert (usage.input_cost, usage.cached_input_cost, usage.output_cost) == (
        Decimal("0.000000000"),
        Decimal("0.000050000"),
        Decimal("0.000000000"),
    )
    assert usage.cost == Decimal("0.000050000")
    # Tokens are still counted: budgets count what was served.
    assert (usage.input_tokens, usage.cached_input_tokens, usage.output_tokens) == (1000, 1000, 200)
    assert usage.total_tokens == 1200 and usage.cache_hit is True


def test_a_hit_bills_every_prompt_token_as_cached_whatever_the_result_says() -> None:
    usage = usage_of(result("textgen", cache_hit=True, cached=0), PRICES)
    assert usage.cached_input_tokens == 1000 and usage.cost == Decimal("0.000050000")


def test_a_model_without_a_cache_price_bills_a_hit_at_its_input_price() -> None:
    usage = usage_of(result("minilm", cache_hit=True, cached=1000), PRICES)
    assert usage.cached_input_cost == Decimal("0.000020000") == usage.cost


def test_usage_written_before_cache_hit_existed_reads_as_a_miss() -> None:
    avro = usage_of(result("textgen", cache_hit=False), PRICES).to_avro()
    del avro["cache_hit"]
    assert Usage.from_avro(avro).cache_hit is False
