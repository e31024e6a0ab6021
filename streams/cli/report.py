"""``sluice report``: the key analytics of the last hours as one HTML page."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn

from streams.cli import console
from streams.cli.sql import warehouse
from streams.llm.model_catalog import ModelCatalog, load_models
from streams.settings import get_settings
from streams.warehouse import clickhouse
from streams.warehouse.report import Objective, build
from streams.warehouse.report.queries import QUERIES, Query


def objectives(catalog: ModelCatalog) -> list[Objective]:
    """The SLOs the catalog declares, as the report's query takes them."""
    return [
        Objective(
            model=model.name,
            window_days=model.slo.window_days,
            availability=model.slo.availability,
            latency_target=model.slo.latency.target,
            latency_threshold_ms=model.slo.latency.threshold_s * 1000,
        )
        for model in catalog.models.values()
        if model.slo is not None
    ]


@click.command()
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    default=None,
    help="The HTML file to write (default: sluice-report-<UTC time>.html here).",
)
@click.option(
    "--hours",
    type=click.FloatRange(min=0, min_open=True, max=24 * 366),
    default=24.0,
    show_default=True,
    help="How many hours back from now the report covers.",
)
def report(out: Path | None, hours: float) -> None:
    """Write one self-contained HTML page with the key plots of the last HOURS hours.

    Cost per tenant and model, latency quantiles and throughput per model, each model's
    SLOs and error budget (over its SLO window), dead letters, blocked requests, PII
    findings, drift alerts, budgets and the slowest traces, from
    Sluice's ClickHouse (through the sink while it holds the embedded database). The page
    needs no network: open it in any browser.
    """
    now = datetime.now(UTC)
    path = out or Path(f"sluice-report-{now:%Y%m%dT%H%MZ}.html")
    settings = get_settings()
    declared = objectives(load_models(settings.triton.models_file))
    db = warehouse(settings)
    try:
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            console=console,
            transient=True,
        ) as progress:
            task = progress.add_task("querying ClickHouse", total=len(QUERIES) + 1)

            def on_query(query: Query) -> None:
                progress.update(
                    task, description=f"querying {query.title}", completed=QUERIES.index(query)
                )

            data, page = build(db, hours=hours, now=now, on_query=on_query, objectives=declared)
            progress.update(task, description="rendering", completed=len(QUERIES) + 1)
    except clickhouse.WarehouseError as exc:
        raise clickhouse.WarehouseError(_advice(str(exc))) from exc
    finally:
        db.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write the report to {path}: {exc}") from exc
    size = path.stat().st_size
    console.print(
        f"report of the last {hours:g} h from {data.source} written to "
        f"[bold]{path.resolve()}[/bold] ({size / 1024:.0f} KiB)"
    )
    if data.empty:
        console.print(
            f"[yellow]no rows in the last {hours:g} h.[/yellow] Is the sink running "
            "(`sluice run sink`)? It loads the analytics topics into ClickHouse; `--hours` "
            "reaches further back."
        )


def _advice(message: str) -> str:
    """The warehouse's error with what the user can do about it."""
    if "UNKNOWN_TABLE" in message or "Unknown table" in message:
        return (
            f"{message}\nSluice's tables do not exist in this database yet: start the sink "
            "(`sluice run sink`), which creates them, or run `sluice db migrate`."
        )
    if "UNKNOWN_DATABASE" in message:
        return f"{message}\nCreate Sluice's database and tables with `sluice db migrate`."
    return (
        f'{message}\nCheck that ClickHouse answers (`sluice sql "SELECT 1"`) and that '
        "SLUICE_CLICKHOUSE__URL points at Sluice's database."
    )


COMMANDS = [report]
