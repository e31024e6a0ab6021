"""Money as ``Decimal``, end to end: parsing, the fixed scale, and the Avro mapping.

Every amount is USD with 9 decimal places (Avro ``bytes``/decimal(18, 9),
ClickHouse ``Decimal(18, 9)``). Nine places represent every per-token price in
use exactly (the cheapest, cache reads of small models, are around 1e-8 USD),
so ``tokens * price`` is exact; 18 digits leave 9 integer digits, up to
999,999,999.999999999 USD per value, which no single request, window or
monthly budget reaches, and fit ClickHouse's 64-bit Decimal64, which sums fast
(sums are widened to Decimal128 by ClickHouse itself).
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from streams.errors import SluiceError

PRECISION = 18
SCALE = 9
QUANTUM = Decimal(1).scaleb(-SCALE)
MAX = Decimal(10) ** (PRECISION - SCALE) - QUANTUM
ZERO = Decimal("0").quantize(QUANTUM)


class MoneyError(SluiceError, ValueError):
    """An amount that is not a finite, representable USD value."""


def parse(value: object, *, what: str = "amount") -> Decimal:
    """A Decimal from a YAML/JSON scalar: str, int, Decimal or float (by its shortest repr).

    Floats are read through ``repr`` so that ``0.00000015`` in a YAML file is
    exactly 1.5e-7, not the binary float nearest to it.
    """
    if isinstance(value, bool):
        raise MoneyError(f"{what}: expected a number, got a boolean")
    try:
        if isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, int | str | Decimal):
            number = Decimal(str(value).strip())
        else:
            raise MoneyError(f"{what}: expected a number, got {type(value).__name__}")
    except InvalidOperation:
        raise MoneyError(f"{what}: {value!r} is not a number") from None
    if not number.is_finite():
        raise MoneyError(f"{what}: {value!r} is not a finite number")
    return number


def exact(value: Decimal, *, what: str = "amount") -> Decimal:
    """``value`` at the money scale, refusing anything that would need rounding."""
    quantized = value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)
    if quantized != value:
        raise MoneyError(
            f"{what}: {value} has more than {SCALE} decimal places; Sluice keeps money "
            f"exact at {SCALE} places (1e-{SCALE} USD)"
        )
    if abs(quantized) > MAX:
        raise MoneyError(f"{what}: {value} exceeds {MAX}, the largest amount Sluice stores")
    return quantized


def non_negative(value: object, *, what: str = "amount") -> Decimal:
    """An exact amount (a price, a budget) from a YAML/JSON scalar, refusing negatives."""
    number = exact(parse(value, what=what), what=what)
    if number < 0:
        raise MoneyError(f"{what} {number} is negative")
    return number


def to_scale(value: Decimal) -> Decimal:
    """``value`` at the money scale (already exact when it comes from prices times tokens)."""
    return value.quantize(QUANTUM, rounding=ROUND_HALF_EVEN)


def plain(amount: Decimal) -> str:
    """An amount without trailing zeros and never in exponent form (50, not 5E+1)."""
    text = f"{amount:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text
