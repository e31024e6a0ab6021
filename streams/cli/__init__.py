"""The ``sluice`` command line."""

from __future__ import annotations

import logging
import sys

import click
from rich.console import Console

from streams.errors import SluiceError
from streams.settings import get_settings

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


class SluiceGroup(click.Group):
    """Turns every error Sluice raises on purpose into one red line instead of a traceback.

    The message of a ``SluiceError`` says what to do next; anything else is a bug and
    keeps its traceback.
    """

    def invoke(self, ctx: click.Context) -> object:
        """Run the command, reporting expected failures plainly."""
        try:
            return super().invoke(ctx)
        except SluiceError as exc:
            # soft_wrap: rich adds no line breaks of its own (the terminal wraps).
            # The message may quote a value from outside (a header, a row): never markup.
            from streams.cli.output import safe  # noqa: PLC0415 (this module defines the consoles)

            err_console.print(f"[red]error:[/red] {safe(exc, multiline=True)}", soft_wrap=True)
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
        acl,
        batch,
        connect,
        datasets,
        dlq,
        docs,
        drift,
        keys,
        report,
        run,
        schemas,
        slo,
        sql,
        stack,
        tenants,
    )
    from streams.cli.demo import command as demo  # noqa: PLC0415

    modules = (
        stack,
        schemas,
        acl,
        datasets,
        run,
        dlq,
        sql,
        report,
        connect,
        demo,
        batch,
        drift,
        docs,
        tenants,
        keys,
        slo,
    )
    for module in modules:
        for command in module.COMMANDS:
            main.add_command(command)


_register()
