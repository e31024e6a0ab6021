"""``sluice slo``: the models' service-level objectives, as Prometheus rules."""

from __future__ import annotations

import click

from processors.infer.processor import TRITON_SECONDS_BUCKETS
from streams.llm.model_catalog import load_models
from streams.llm.slo_rules import render
from streams.settings import get_settings


@click.group()
def slo() -> None:
    """Service-level objectives declared per model in infra/triton/models.yaml."""


@slo.command()
def rules() -> None:
    """Print the SLO recording and burn-rate alert rules generated from the model catalog.

    Commit the output as infra/prometheus/rules/slo.rules.yml:
    ``sluice slo rules > infra/prometheus/rules/slo.rules.yml``.
    """
    catalog = load_models(get_settings().triton.models_file)
    click.echo(render(catalog, TRITON_SECONDS_BUCKETS), nl=False)


COMMANDS = (slo,)
