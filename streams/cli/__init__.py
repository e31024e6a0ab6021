"""The ``sluice`` command line."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

from streams.settings import get_settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class SluiceGroup(click.Group):
    """Turns the errors a user can fix into one red line instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        """Run the command, reporting expected failures plainly."""
        from streams.budgets import BudgetConfigError  # noqa: PLC0415
        from streams.catalog import CatalogError  # noqa: PLC0415
        from streams.clickhouse import WarehouseError  # noqa: PLC0415
        from streams.connect import ConnectError  # noqa: PLC0415
        from streams.contracts import ContractError  # noqa: PLC0415
        from streams.pricing import PriceError  # noqa: PLC0415
        from streams.registry import IncompatibleSchemaError  # noqa: PLC0415
        from streams.serde import SchemaNotRegisteredError  # noqa: PLC0415
        from streams.stack.components import ComponentError  # noqa: PLC0415
        from streams.stack.java import JavaNotFoundError  # noqa: PLC0415
        from streams.stack.maven import MavenError  # noqa: PLC0415

        try:
            return super().invoke(ctx)
        except (
            CatalogError,
            ConnectError,
            ContractError,
            IncompatibleSchemaError,
            SchemaNotRegisteredError,
            ComponentError,
            JavaNotFoundError,
            MavenError,
            WarehouseError,
            PriceError,
            BudgetConfigError,
        ) as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)


@click.group(cls=SluiceGroup)
@click.version_option(package_name="sluice")
def main() -> None:
    """Sluice: operate ML and LLM inference in production on Apache Kafka."""
    logging.basicConfig(
        level=get_settings().log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # librdkafka and httpx are chatty at INFO; their warnings still show.
    for noisy in ("httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _register() -> None:
    from streams.cli import (  # noqa: PLC0415
        batch,
        connect,
        datasets,
        demo,
        dlq,
        drift,
        report,
        run,
        schemas,
        sql,
        stack,
    )

    for module in (stack, schemas, datasets, run, dlq, sql, report, connect, demo, batch, drift):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
