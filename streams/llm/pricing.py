"""The model price table (``schemas/prices.yaml``) and what a request costs.

Field names are LiteLLM's model cost map's (``input_cost_per_token``,
``output_cost_per_token``, ``cache_read_input_token_cost``), in USD per token,
so prices can be copied from it. Prices are ``Decimal`` with at most 9 decimal
places (see ``streams.contracts.money``): the cost of a request is then exact, to the
nano-dollar, and sums of costs are exact too.

Cached prompt tokens are part of ``input_tokens`` (as in the OpenAI usage
object); they are billed at the cache price and the rest at the input price.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from streams.contracts import money
from streams.errors import ConfigurationError


class PriceError(ConfigurationError, ValueError):
    """The price table cannot be loaded; the message says which entry and why."""


class ModelPrice(BaseModel):
    """USD per token of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_cost_per_token: Decimal
    output_cost_per_token: Decimal = money.ZERO
    cache_read_input_token_cost: Decimal | None = Field(
        None, description="Price of a cached prompt token; default: the input price."
    )

    @field_validator(
        "input_cost_per_token",
        "output_cost_per_token",
        "cache_read_input_token_cost",
        mode="before",
    )
    @classmethod
    def _decimal(cls, value: Any) -> Decimal | None:
        return None if value is None else money.non_negative(value, what="price")

    @property
    def cache_price(self) -> Decimal:
        """What one cached prompt token costs."""
        if self.cache_read_input_token_cost is None:
            return self.input_cost_per_token
        return self.cache_read_input_token_cost


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    currency: str = "USD"
    models: dict[str, ModelPrice]

    @field_validator("currency")
    @classmethod
    def _usd(cls, value: str) -> str:
        if value != "USD":
            raise ValueError("only USD is supported")
        return value


@dataclass(frozen=True, slots=True)
class Cost:
    """What one request cost, by token type; ``priced`` is False for an unknown model."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    priced: bool

    @property
    def total(self) -> Decimal:
        """The whole cost of the request."""
        return money.to_scale(self.input + self.cached_input + self.output)


@dataclass(frozen=True)
class PriceTable:
    """Prices per model, with the version (content hash) of the file they came from."""

    models: dict[str, ModelPrice]
    version: str

    def cost(
        self, model: str, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> Cost:
        """The cost of a request; an unknown model costs nothing and is marked unpriced."""
        price = self.models.get(model)
        if price is None:
            return Cost(money.ZERO, money.ZERO, money.ZERO, priced=False)
        cached = max(0, min(cached_input_tokens, input_tokens))
        fresh = max(0, input_tokens) - cached
        return Cost(
            input=money.to_scale(fresh * price.input_cost_per_token),
            cached_input=money.to_scale(cached * price.cache_price),
            output=money.to_scale(max(0, output_tokens) * price.output_cost_per_token),
            priced=True,
        )


def load_prices(path: Path) -> PriceTable:
    """Load and validate ``prices.yaml``; errors name the model and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PriceError(f"cannot read the price table {path}: {exc}") from exc
    try:
        spec = _PriceFile.model_validate(yaml.safe_load(text) or {})
    except yaml.YAMLError as exc:
        raise PriceError(f"{path} is not valid YAML: {exc}") from exc
    except ValidationError as exc:
        problems = "\n".join(
            f"  {'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise PriceError(
            f"{path} is not a valid price table (USD per token, at most 9 decimal places, "
            f"not negative):\n{problems}"
        ) from exc
    version = hashlib.sha256(text.encode()).hexdigest()[:12]
    return PriceTable(dict(spec.models), version)
