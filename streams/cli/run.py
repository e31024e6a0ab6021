"""``sluice run <processor>``: run one replica of a processor."""

from __future__ import annotations

import click

import processors
from streams.cli import console
from streams.runner import Runner
from streams.settings import get_settings
from streams.tracing import setup_tracing


@click.command()
@click.argument("processor", type=click.Choice(sorted(processors.PROCESSORS)))
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus port of this replica (default SLUICE_METRICS__PORT; runner processors).",
)
def run(processor: str, metrics_port: int | None) -> None:
    """Run PROCESSOR until SIGTERM; start more replicas to share its partitions.

    Each replica joins the consumer group sluice.PROCESSOR; Kafka spreads the
    input partitions over them. Set SLUICE_RUNNER__INSTANCE_ID to give a
    replica a stable name.
    """
    settings = get_settings()
    loaded = processors.resolve(processor)
    console.print(f"running {processor} ({loaded.description}) — Ctrl-C or SIGTERM to stop")
    if loaded.main is not None:
        loaded.main(settings)
        return
    assert loaded.spec is not None  # noqa: S101 (resolve returns one or the other)
    provider = setup_tracing(f"sluice-{processor}", settings)
    runner = Runner(loaded.spec, settings, metrics_port=metrics_port)
    runner.install_signal_handlers()
    try:
        runner.run()
    finally:
        if provider is not None:
            provider.shutdown()


COMMANDS = [run]
