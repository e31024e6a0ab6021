"""``sluice run <processor>``: run one replica of a processor."""

from __future__ import annotations

import os

import click

import processors
from streams.cli import console
from streams.gateway.server import GATEWAY
from streams.runtime.runner import Runner
from streams.runtime.spec import ProcessorSpec
from streams.runtime.tracing import setup_tracing
from streams.settings import get_settings
from streams.stack import local_processor_environment

#: What ``sluice run`` starts besides the processors: the OpenAI-compatible gateway.
SERVICES = ("gateway",)


@click.command()
@click.argument("processor", type=click.Choice(sorted([*processors.PROCESSORS, *SERVICES])))
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="Prometheus port of this replica (default SLUICE_METRICS__PORT).",
)
def run(processor: str, metrics_port: int | None) -> None:
    """Run PROCESSOR until SIGTERM; start more replicas to share its partitions.

    Each replica joins the consumer group sluice.PROCESSOR; Kafka spreads the
    input partitions over them. Set SLUICE_RUNNER__INSTANCE_ID to give a
    replica a stable name.

    `sluice run gateway` serves the OpenAI-compatible API (SLUICE_GATEWAY__*); start
    several behind a load balancer.
    """
    # Defaults only the local stack knows (never overriding what is set explicitly),
    # then the settings read again (get_settings caches them) so that they include them.
    for name, value in local_processor_environment(get_settings(), processor).items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    spec = GATEWAY if processor == "gateway" else processors.resolve(processor)
    config = spec.build_settings()  # the processor's own settings, built once, handed in
    # Who the broker will take it for: what its ACLs are checked against (no secret).
    user = settings.kafka.options.get("sasl.username")
    login = f" as Kafka user {user}" if user else ""
    console.print(f"running {processor} ({spec.description}){login} — Ctrl-C or SIGTERM to stop")
    provider = setup_tracing(f"sluice-{processor}", settings)
    try:
        if isinstance(spec, ProcessorSpec):
            runner = Runner(spec, settings, config, metrics_port=metrics_port)
            runner.install_signal_handlers()
            runner.run()
        else:
            spec.run(settings, config, metrics_port)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the last spans


COMMANDS = [run]
