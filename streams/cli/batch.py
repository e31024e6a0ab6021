"""``sluice batch profile``: reference profiles for drift, and the contract applied to history."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from streams.cli import console, err_console
from streams.cli.output import cell, safe
from streams.contracts.catalog import catalog_for
from streams.profiling.profiles import Profile
from streams.settings import get_settings

CUDF_HELP = (
    "--engine cudf runs the pandas engine under RAPIDS cudf.pandas and needs an NVIDIA GPU "
    "with cuDF installed (pip install cudf-cu12, matching your CUDA); on other machines "
    "use --engine pandas or spark"
)


@click.group()
def batch() -> None:
    """Batch jobs over a dataset's or the models' history."""


@batch.command()
@click.argument("target")
@click.option(
    "--engine",
    type=click.Choice(["spark", "pandas", "cudf"]),
    default="spark",
    show_default=True,
    help="spark (large data, reads Kafka with spark-sql-kafka), pandas, or cudf (pandas on GPU).",
)
@click.option(
    "--input",
    "input_path",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="Parquet file/folder or JSON-lines file; default: the topic's whole history.",
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Folder for the JSON profiles."
)
@click.option(
    "--publish/--no-publish", default=True, show_default=True, help="Send to drift.profiles."
)
@click.option(
    "--check/--no-check", default=True, show_default=True, help="Apply the data contract."
)
@click.option("--limit", type=int, default=None, help="Profile only the first N records.")
def profile(  # noqa: PLR0917 (click passes options by position)
    target: str,
    engine: str,
    input_path: Path | None,
    out: Path | None,
    publish: bool,
    check: bool,
    limit: int | None,
) -> None:
    """Build the reference profile of TARGET: a dataset name, or `results` (one per model).

    Quantiles, histograms, category frequencies, null rates (and the embedding
    centroid for models); for datasets, every record is checked against the
    contract and violations are reported by field. The profile is written as
    JSON and published to drift.profiles, which `sluice run drift` loads at start.
    """
    if engine == "cudf":
        _install_cudf_pandas()
    from streams.profiling import profile_job  # noqa: PLC0415 (after cudf.pandas, if asked)

    settings = get_settings()
    catalog = catalog_for(settings)
    if target != profile_job.RESULTS:
        catalog.dataset(target)  # a clear error for an unknown dataset, before any work
    request = profile_job.ProfileRequest(target, engine, input_path, check, limit)  # type: ignore[arg-type]
    batch = profile_job.BatchSettings()
    outcome = profile_job.run(
        request, settings, catalog, lambda m: console.print(f"   {safe(m)}"), batch
    )
    directory = out or batch.out_dir or settings.stack.root / "profiles"
    for path, built in zip(
        profile_job.write(outcome.profiles, directory), outcome.profiles, strict=True
    ):
        _report(built)
        console.print(f"   written to {safe(path)}")
    if publish:
        profile_job.publish(outcome.profiles, settings, catalog)
        console.print(f"published {len(outcome.profiles)} profile(s) to drift.profiles")
    console.print(f"done in {outcome.seconds:.1f}s with {engine}")


def _install_cudf_pandas() -> None:
    """cudf.pandas must patch pandas before anything imports it (the RAPIDS way)."""
    if "pandas" in sys.modules:
        raise click.ClickException(
            "pandas was imported before cudf.pandas could be installed; run "
            "`python -m cudf.pandas -m streams batch profile ... --engine pandas` instead"
        )
    try:
        import cudf.pandas  # noqa: PLC0415
    except ImportError as exc:
        raise click.ClickException(f"{CUDF_HELP} ({exc})") from exc
    cudf.pandas.install()
    err_console.print("cudf.pandas installed: pandas operations run on the GPU where cuDF can")


def _report(built: Profile) -> None:
    # Field names, categories and model names come from the data: cells are Text.
    table = Table(
        title=cell(f"{built.key}: {built.rows:,} records ({built.engine}, {built.source})")
    )
    for column in ("field", "kind", "count", "nulls", "mean / top", "p01", "p50", "p99"):
        table.add_column(column)
    for numeric in built.numeric:
        q = numeric.quantiles
        table.add_row(
            cell(numeric.field),
            "numeric",
            f"{numeric.count:,}",
            f"{numeric.null_count:,}",
            f"{numeric.mean:.4g}" if numeric.mean is not None else "-",
            *([f"{q[1]:.4g}", f"{q[50]:.4g}", f"{q[99]:.4g}"] if q else ["-", "-", "-"]),
        )
    for categorical in built.categorical:
        top = ", ".join(
            f"{c} {n / max(categorical.count, 1):.0%}"
            for c, n in zip(categorical.categories[:3], categorical.counts, strict=False)
        )
        table.add_row(
            cell(categorical.field),
            "category",
            f"{categorical.count:,}",
            f"{categorical.null_count:,}",
            cell(top),
            "",
            "",
            "",
        )
    console.print(table)
    if built.violations:
        violations = Table(
            title=cell(f"contract violations in {built.subject}'s history, by field")
        )
        for column in ("field", "rule", "records", "detail"):
            violations.add_column(column)
        for v in built.violations:
            violations.add_row(cell(v.field), cell(v.rule), f"{v.count:,}", cell(v.message))
        console.print(violations)
    elif built.subject_kind == "dataset":
        console.print("   no contract violations")


COMMANDS = [batch]
