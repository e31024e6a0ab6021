from decimal import Decimal

import pytest

from streams.contracts import money
from streams.llm.pricing import PriceError, load_prices
from streams.settings import PROJECT_ROOT


def write(tmp_path, text):
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


def test_the_shipped_table_loads_with_exact_decimals():
    prices = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
    assert {"minilm", "textgen", "gpt-4o-mini"} <= set(prices.models)
    mini = prices.models["gpt-4o-mini"]
    assert mini.input_cost_per_token == Decimal("0.00000015")
    assert mini.cache_read_input_token_cost == Decimal("0.000000075")
    assert len(prices.version) == 12


def test_cost_is_exact_by_token_type():
    prices = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
    cost = prices.cost("gpt-4o-mini", input_tokens=1000, output_tokens=200, cached_input_tokens=400)
    assert cost.input == Decimal("0.000090000")  # 600 fresh x 1.5e-7
    assert cost.cached_input == Decimal("0.000030000")  # 400 x 7.5e-8
    assert cost.output == Decimal("0.000120000")  # 200 x 6e-7
    assert cost.total == Decimal("0.000240000")
    assert cost.priced
    # a million requests add up to exactly a million times one
    assert sum([cost.total] * 1_000_000, Decimal(0)) == Decimal("240")


def test_unknown_model_is_unpriced_not_an_error():
    prices = load_prices(PROJECT_ROOT / "schemas" / "prices.yaml")
    cost = prices.cost("my-own-model", 10, 10)
    assert not cost.priced
    assert cost.total == money.ZERO


def test_cache_price_defaults_to_input_price(tmp_path):
    prices = load_prices(write(tmp_path, "models:\n  m:\n    input_cost_per_token: '0.000001'\n"))
    assert prices.cost("m", 10, 0, cached_input_tokens=4).total == Decimal("0.00001")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("input_cost_per_token: -0.1", "negative"),
        ("input_cost_per_token: '0.0000000001'", "more than 9 decimal places"),
        ("input_cost_per_token: abc", "not a number"),
        ("input_cost_per_token: 1\n    output_cost: 2", "output_cost"),
        ("output_cost_per_token: 1", "input_cost_per_token"),
    ],
)
def test_invalid_prices_say_which_model_and_field(tmp_path, entry, message):
    with pytest.raises(PriceError) as error:
        load_prices(write(tmp_path, f"models:\n  gpt-x:\n    {entry}\n"))
    assert "gpt-x" in str(error.value)
    assert message in str(error.value)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "nope.yaml")
