"""The data contract applied to historical records: the same compiled rules validate runs.

Every record goes through ``Contract.check``, the function validate runs per
event, so history is judged exactly as the stream is; both engines call
``check_frame`` (Spark through ``mapInPandas``), so they agree by construction.
Null rates, a property of the whole data, are checked against ``max_null_rate``
once the profile has counted the nulls.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from streams.contracts.datasets import Contract
from streams.profiling.profiles import FieldViolation, Profile

#: Column added by ``check_frame``: the broken rules of the row as "field:rule" joined by ";".
VIOLATIONS_COLUMN = "_sluice_violations"


def json_value(value: Any) -> Any:
    """A column value as the contract expects JSON: NaN is null, timestamps are epoch ms."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day).timestamp() * 1000)
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        # numpy scalars (and pandas NaT, whose item() is None)
        try:
            return json_value(value.item())
        except (ValueError, AttributeError):
            return None
    if type(value).__name__ == "Timestamp":
        return int(value.value // 1_000_000)
    return value


def row_violations(document: Mapping[str, Any], contract: Contract) -> str:
    """The rules ``document`` breaks, as "field:rule;field:rule" ("" when it passes)."""
    _, violations = contract.check(document)
    return ";".join(f"{v.field}:{v.rule}" for v in violations)


def check_rows(rows: Iterable[Mapping[str, Any]], contract: Contract) -> list[str]:
    """``row_violations`` for each row, converting column values to their JSON form."""
    return [row_violations({k: json_value(v) for k, v in row.items()}, contract) for row in rows]


def count_violations(rows: Iterable[str]) -> Counter[tuple[str, str]]:
    """Violations per (field, rule) from ``check_rows`` output."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        if row:
            for item in row.split(";"):
                field, _, rule = item.partition(":")
                counts[(field, rule)] += 1
    return counts


def rule_violations(
    counts: Mapping[tuple[str, str], int], contract: Contract
) -> list[FieldViolation]:
    """Violations per field and rule, with a message that names the limit."""
    result = []
    for (field, rule), count in sorted(counts.items()):
        rules = contract.spec.fields.get(field)
        limit = getattr(rules, rule, None) if rules is not None else None
        message = f"{count} record(s) break {rule}" + (
            f" ({limit})" if limit not in (None, True) else ""
        )
        result.append(FieldViolation(field, rule, count, message))
    return result


def null_rate_violations(profile: Profile, contract: Contract) -> list[FieldViolation]:
    """Fields whose null rate over the whole data is above their ``max_null_rate``."""
    result = []
    for field, limit in sorted(contract.null_rate_limits.items()):
        found = profile.numeric_field(field) or profile.categorical_field(field)
        if found is None:
            continue
        total = found.count + found.null_count
        rate = found.null_count / total if total else 0.0
        if rate > limit:
            message = f"null rate {rate:.3f} is above the contract's max_null_rate {limit}"
            result.append(FieldViolation(field, "max_null_rate", 1, message))
    return result
