"""The report's SLO table: each model's objectives against what ``results`` holds.

Per model, over its SLO window ending at the report's end: the results, the share that
were ``ok`` (availability) and the share of successful Triton calls within the latency
threshold (a cache hit, ``batch_size = 0``, made no call and is left out, as in the
``sluice_infer_triton_seconds`` histogram the alerts read), the error budget each has
spent, and, from the last 24 hours' burn rate, when the rest runs out at that pace.

All of it is computed by one ClickHouse query over ``results FINAL``. The objectives come
from the model catalog (the CLI converts them: this layer does not read the catalog); they
are formatted into the SQL as literals, which is safe because the catalog's loader has
validated them: model names match ``[A-Za-z0-9][A-Za-z0-9._-]*``, the rest are numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.warehouse.clickhouse import Warehouse

#: The span whose burn rate projects when a budget runs out.
BURN_HOURS = 24
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Objective:
    """A model's declared SLOs (the ``slo:`` block of infra/triton/models.yaml)."""

    model: str
    window_days: int
    availability: float
    latency_target: float
    latency_threshold_ms: float

    def literal(self) -> str:
        """This objective as a row of the query's ``values`` table."""
        if _MODEL_NAME.fullmatch(self.model) is None:  # the catalog refuses such names
            raise ValueError(f"not a model name: {self.model!r}")
        numbers = (self.availability, self.latency_target, self.latency_threshold_ms)
        if not all(math.isfinite(n) for n in numbers) or self.window_days < 1:
            raise ValueError(f"objective of {self.model} is not finite")
        return (
            f"('{self.model}', {int(self.window_days)}, {self.availability!r}, "
            f"{self.latency_target!r}, {self.latency_threshold_ms!r})"
        )


SLO_SQL = """
WITH
    {end} AS report_end,
    results_in_window AS (
        SELECT o.model AS model, o.window_days AS window_days,
               o.availability AS availability_target, o.latency_target AS latency_target,
               o.threshold_ms AS threshold_ms,
               r.completed_at AS completed_at, r.status AS status,
               r.batch_size AS batch_size, r.inference_ms AS inference_ms,
               r.completed_at >= report_end - toIntervalDay(o.window_days) AS in_window,
               r.completed_at >= report_end - toIntervalHour({burn_hours}) AS recent
        FROM values('model String, window_days UInt16, availability Float64,
                     latency_target Float64, threshold_ms Float64', {objectives}) AS o
        LEFT JOIN (
            SELECT model, completed_at, status, batch_size, inference_ms
            FROM results FINAL
            WHERE completed_at >= report_end - toIntervalDay({longest_days})
              AND completed_at < report_end
        ) AS r ON r.model = o.model
    ),
    counts AS (
        SELECT
            model, window_days, availability_target, latency_target, threshold_ms,
            countIf(in_window) AS requests,
            countIf(in_window AND status = 'ok') AS ok,
            countIf(in_window AND status = 'ok' AND batch_size > 0) AS timed,
            countIf(in_window AND status = 'ok' AND batch_size > 0
                    AND inference_ms <= threshold_ms) AS fast,
            countIf(recent) AS recent_requests,
            countIf(recent AND status = 'ok') AS recent_ok,
            countIf(recent AND status = 'ok' AND batch_size > 0) AS recent_timed,
            countIf(recent AND status = 'ok' AND batch_size > 0
                    AND inference_ms <= threshold_ms) AS recent_fast,
            toUnixTimestamp64Milli(minIf(completed_at, in_window)) AS first_ms
        FROM results_in_window
        GROUP BY model, window_days, availability_target, latency_target, threshold_ms
    ),
    ratios AS (
        SELECT *,
            if(requests = 0, NULL, ok / requests) AS availability,
            if(timed = 0, NULL, fast / timed) AS latency_compliance,
            if(recent_requests = 0, NULL,
               (1 - recent_ok / recent_requests) / (1 - availability_target)) AS availability_burn,
            if(recent_timed = 0, NULL,
               (1 - recent_fast / recent_timed) / (1 - latency_target)) AS latency_burn
        FROM counts
    ),
    spent AS (
        SELECT *,
            (1 - availability) / (1 - availability_target) AS availability_spent,
            (1 - latency_compliance) / (1 - latency_target) AS latency_spent
        FROM ratios
    )
SELECT
    model, window_days, availability_target, latency_target, threshold_ms,
    requests, ok, timed, fast, first_ms,
    availability, latency_compliance,
    100 * availability_spent AS availability_budget_spent_pct,
    100 * latency_spent AS latency_budget_spent_pct,
    availability_burn, latency_burn,
    if(availability_burn > 0,
       greatest(0, 1 - ifNull(availability_spent, 0)) * window_days * 24 / availability_burn,
       NULL) AS availability_hours_left,
    if(latency_burn > 0,
       greatest(0, 1 - ifNull(latency_spent, 0)) * window_days * 24 / latency_burn,
       NULL) AS latency_hours_left
FROM spent
ORDER BY model
"""


def slo_sql(objectives: Sequence[Objective], end: datetime) -> str:
    """The query for ``objectives`` over their windows ending at ``end``."""
    return SLO_SQL.format(
        end=f"fromUnixTimestamp64Milli(toInt64({int(end.timestamp() * 1000)}), 'UTC')",
        burn_hours=BURN_HOURS,
        objectives=", ".join(o.literal() for o in objectives),
        longest_days=max(o.window_days for o in objectives),
    )


@dataclass(frozen=True)
class SloRow:
    """One model's SLOs against its results.

    Ratios are None when nothing was measured; hours left is None when the budget is not
    burning (no bad event in the last 24 h).
    """

    objective: Objective
    requests: int
    ok: int
    timed: int
    fast: int
    first: datetime | None
    availability: float | None
    latency_compliance: float | None
    availability_budget_spent_pct: float | None
    latency_budget_spent_pct: float | None
    availability_burn: float | None
    latency_burn: float | None
    availability_hours_left: float | None
    latency_hours_left: float | None


def _optional(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def collect_slos(
    warehouse: Warehouse, objectives: Sequence[Objective], end: datetime
) -> list[SloRow]:
    """Each objective's row, in model order; no objective, no query."""
    if not objectives:
        return []
    by_model = {o.model: o for o in objectives}
    rows = warehouse.query(slo_sql(objectives, end).strip()).dicts()
    return [
        SloRow(
            objective=by_model[r["model"]],
            requests=int(r["requests"]),
            ok=int(r["ok"]),
            timed=int(r["timed"]),
            fast=int(r["fast"]),
            first=(
                datetime.fromtimestamp(int(r["first_ms"]) / 1000, UTC)
                if int(r["requests"])
                else None
            ),
            availability=_optional(r["availability"]),
            latency_compliance=_optional(r["latency_compliance"]),
            availability_budget_spent_pct=_optional(r["availability_budget_spent_pct"]),
            latency_budget_spent_pct=_optional(r["latency_budget_spent_pct"]),
            availability_burn=_optional(r["availability_burn"]),
            latency_burn=_optional(r["latency_burn"]),
            availability_hours_left=_optional(r["availability_hours_left"]),
            latency_hours_left=_optional(r["latency_hours_left"]),
        )
        for r in rows
    ]


def exhaustion(hours_left: float | None) -> str:
    """When a budget runs out at the last 24 hours' pace, in words."""
    if hours_left is None:
        return "never"
    if hours_left <= 0:
        return "exhausted"
    if hours_left < 48:
        return f"in {hours_left:.1f} h"
    return f"in {hours_left / 24:.1f} days"
