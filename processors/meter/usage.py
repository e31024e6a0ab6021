"""From an InferenceResult to the UsageEvent that meters it (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from streams.contracts.records import InferenceResult
from streams.llm.pricing import PriceTable


@dataclass(frozen=True, slots=True)
class Usage:
    """sluice.v1.UsageEvent: tokens and cost of one request."""

    request_id: str
    tenant_id: str
    model: str
    operation: str
    status: str
    error_code: str | None
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    total_tokens: int
    input_cost: Decimal
    cached_input_cost: Decimal
    output_cost: Decimal
    cost: Decimal
    priced: bool
    price_version: str
    request_created_at: datetime
    completed_at: datetime
    currency: str = "USD"
    cache_hit: bool = False

    @property
    def is_error(self) -> bool:
        """True for a failed request."""
        return self.status != "ok"

    @property
    def completed_ms(self) -> int:
        """Event time in epoch milliseconds."""
        return int(self.completed_at.timestamp() * 1000)

    def to_avro(self) -> dict[str, Any]:
        """The dict the Avro encoder takes."""
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_avro(cls, value: dict[str, Any]) -> Usage:
        """From a decoded Avro record."""
        # cache_hit came later (default false): a record written before it has none.
        return cls(**{name: value[name] for name in cls.__slots__ if name in value})


def usage_of(result: InferenceResult, prices: PriceTable) -> Usage:
    """Meter one result: its tokens by type and their exact cost.

    A cache hit generated nothing: its prompt is billed at the cached price and its
    output costs nothing, though its tokens still count (budgets count tokens served).
    """
    input_tokens = max(0, result.input_tokens)
    output_tokens = max(0, result.output_tokens)
    cached = max(0, min(result.cached_input_tokens, input_tokens))
    if result.cache_hit:
        cost = prices.cost(result.model, input_tokens, 0, cached_input_tokens=input_tokens)
        cached = input_tokens
    else:
        cost = prices.cost(result.model, input_tokens, output_tokens, cached)
    return Usage(
        request_id=result.request_id,
        tenant_id=result.tenant_id,
        model=result.model,
        operation=result.operation,
        status=result.status,
        error_code=result.error_code,
        input_tokens=input_tokens,
        cached_input_tokens=cached,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        input_cost=cost.input,
        cached_input_cost=cost.cached_input,
        output_cost=cost.output,
        cost=cost.total,
        priced=cost.priced,
        price_version=prices.version,
        request_created_at=result.request_created_at,
        completed_at=result.completed_at,
        cache_hit=result.cache_hit,
    )
