"""Prometheus rules for the models' SLOs, generated from the model catalog's ``slo:`` blocks.

The alerts are the multi-window, multi-burn-rate alerts of Google's SRE workbook
(chapter "Alerting on SLOs", the recommended set): page when a model spends 2 % of
its window's error budget in an hour or 5 % in six hours, file a ticket when it spends
10 % in three days. Each condition holds over a long window AND a short one (1/12 of
it), so an alert fires fast and resets soon after the burn stops. The burn-rate
factors follow from the declared window: spending ``share`` of a ``window`` budget in
``long`` is a burn rate of ``share * window / long`` (14.4, 6 and 1 for 30 days).

Two SLIs per model: availability (results with status ``ok`` among all results,
``sluice_infer_results_total``) and latency (requests whose Triton call took at most the
threshold, ``sluice_infer_triton_seconds``: a cache hit makes no call and is not counted).
The file is the output of ``sluice slo rules``; a unit test fails when the committed one
differs, so the thresholds cannot drift from the declaration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import yaml

from streams.llm.model_catalog import ModelCatalog, ModelCatalogError, ModelSpec, SloSpec

RUNBOOK = "docs/how-to/runbooks.md"


@dataclass(frozen=True)
class BurnTier:
    """One burn-rate condition: ``budget_share`` of the budget spent within ``long``."""

    long: timedelta
    short: timedelta
    budget_share: float

    def factor(self, window: timedelta) -> float:
        """The burn rate that spends ``budget_share`` of ``window``'s budget in ``long``."""
        return round(self.budget_share * (window / self.long), 6)


PAGE_TIERS = (
    BurnTier(timedelta(hours=1), timedelta(minutes=5), 0.02),
    BurnTier(timedelta(hours=6), timedelta(minutes=30), 0.05),
)
TICKET_TIERS = (BurnTier(timedelta(days=3), timedelta(hours=6), 0.10),)
WINDOWS = sorted(
    {t.long for t in PAGE_TIERS + TICKET_TIERS} | {t.short for t in PAGE_TIERS + TICKET_TIERS}
)


def duration(span: timedelta) -> str:
    """A Prometheus duration: ``5m``, ``1h``, ``3d``."""
    seconds = int(span.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def le_label(threshold_s: float) -> str:
    """A bucket's ``le`` as Prometheus 3 stores it (``0.1``, ``1.0``, ``2.5``)."""
    return repr(float(threshold_s))


def percent(share: float) -> str:
    """``0.995`` as ``99.5%``."""
    return f"{round(share * 100, 6):g}%"


def ratio_name(sli: str, window: timedelta) -> str:
    """The recorded bad-event ratio of ``sli`` over ``window``."""
    return f"model:slo_{sli}_errors:ratio_rate{duration(window)}"


def _availability_ratio(window: timedelta) -> dict[str, Any]:
    w = duration(window)
    return {
        "record": ratio_name("availability", window),
        "expr": (
            f'sum by (model) (rate(sluice_infer_results_total{{status!="ok"}}[{w}]))\n'
            f"/\nsum by (model) (rate(sluice_infer_results_total[{w}]))"
        ),
    }


def _latency_ratio(model: ModelSpec, slo: SloSpec, window: timedelta) -> dict[str, Any]:
    w = duration(window)
    le = le_label(slo.latency.threshold_s)
    return {
        "record": ratio_name("latency", window),
        "expr": (
            "1 - (\n"
            f'  sum by (model) (rate(sluice_infer_triton_seconds_bucket{{model="{model.name}", '
            f'le="{le}"}}[{w}]))\n'
            "  /\n"
            f'  sum by (model) (rate(sluice_infer_triton_seconds_count{{model="{model.name}"}}'
            f"[{w}]))\n)"
        ),
        # The model's label on the rule too: promtool refuses look-alike rules otherwise.
        "labels": {"model": model.name},
    }


def _condition(
    sli: str, model: str, tiers: Sequence[BurnTier], window: timedelta, budget: float
) -> str:
    parts = []
    for tier in tiers:
        threshold = round(tier.factor(window) * budget, 9)
        parts.append(
            f'(\n  {ratio_name(sli, tier.long)}{{model="{model}"}} > {threshold}\n'
            f'  and\n  {ratio_name(sli, tier.short)}{{model="{model}"}} > {threshold}\n)'
        )
    return "\nor\n".join(parts)


_TEXT = {
    "availability": ("fails", "of its results are errors", "availability"),
    "latency": ("is slow", "of its requests miss the latency threshold", "latency"),
}


def _alert(
    sli: str, severity: str, model: ModelSpec, slo: SloSpec, tiers: Sequence[BurnTier]
) -> dict[str, Any]:
    window = timedelta(days=slo.window_days)
    if sli == "availability":
        target, what = slo.availability, f"{percent(slo.availability)} of results ok"
    else:
        target = slo.latency.target
        what = f"{percent(target)} of Triton calls within {slo.latency.threshold_s:g} s"
    budget = round(1 - target, 9)
    speed = "Fast" if severity == "page" else "Slow"
    name = f"SluiceSlo{sli.capitalize()}Burn{speed}"
    spend = " or ".join(
        f"{t.budget_share:.0%} of the budget in {duration(t.long)} "
        f"(burn rate {t.factor(window):g}x over {duration(t.long)} and {duration(t.short)})"
        for t in tiers
    )
    verb, errors, _ = _TEXT[sli]
    return {
        "alert": name,
        "expr": _condition(sli, model.name, tiers, window, budget),
        "labels": {"severity": severity, "slo": sli, "model": model.name},
        "annotations": {
            "summary": f"{model.name} {verb}: it burns its {sli} error budget",
            "description": (
                f"{{{{ $value | humanizePercentage }}}} {errors} ({model.name}'s SLO: {what} "
                f"over {slo.window_days} days). It fires when {model.name} spends {spend}."
            ),
            "runbook_url": f"{RUNBOOK}#slo-{sli}-burn-{speed.lower()}",
        },
    }


def check_thresholds(catalog: ModelCatalog, buckets: Sequence[float]) -> None:
    """Refuse a latency threshold that is not a bucket boundary of the Triton histogram."""
    for model in catalog.models.values():
        if model.slo is not None and model.slo.latency.threshold_s not in buckets:
            bounds = ", ".join(f"{b:g}" for b in buckets)
            raise ModelCatalogError(
                f"{catalog.path}: model {model.name!r} has an SLO latency threshold of "
                f"{model.slo.latency.threshold_s:g} s, which is not a bucket boundary of "
                f"sluice_infer_triton_seconds; choose one of {bounds}"
            )


def rule_groups(catalog: ModelCatalog, buckets: Sequence[float]) -> dict[str, Any]:
    """The rules file's content: recorded ratios, then the alerts, per SLO'd model."""
    check_thresholds(catalog, buckets)
    models = [(m, m.slo) for m in catalog.models.values() if m.slo is not None]
    # Recorded in the alerts' own group, before them: groups run concurrently, so an alert
    # in another group could read a ratio one evaluation old, or not yet recorded.
    rules: list[dict[str, Any]] = [_availability_ratio(w) for w in WINDOWS]
    for model, slo in models:
        rules += [_latency_ratio(model, slo, w) for w in WINDOWS]
    for model, slo in models:
        for sli in ("availability", "latency"):
            rules.append(_alert(sli, "page", model, slo, PAGE_TIERS))
            rules.append(_alert(sli, "ticket", model, slo, TICKET_TIERS))
    return {"groups": [{"name": "sluice-slo", "rules": rules}]}


HEADER = """\
# GENERATED by `sluice slo rules` from the `slo:` blocks of infra/triton/models.yaml;
# do not edit: change the declaration, then run
#   sluice slo rules > infra/prometheus/rules/slo.rules.yml
# Multi-window, multi-burn-rate alerts (streams/llm/slo_rules.py, docs/explanation/slos.md).
"""


class _Dumper(yaml.SafeDumper):
    """Writes multi-line expressions as literal blocks, as a person would."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _string)


def render(catalog: ModelCatalog, buckets: Sequence[float]) -> str:
    """The rules file as committed."""
    body = yaml.dump(
        rule_groups(catalog, buckets),
        Dumper=_Dumper,
        sort_keys=False,
        width=100,
        default_flow_style=False,
    )
    return HEADER + body
