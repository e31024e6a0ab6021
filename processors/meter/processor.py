"""meter: tokens, cost, windows and budgets per tenant, on faust-streaming.

Reads ``inference.results``; writes one usage event per request to
``metering.usage``, tumbling 1-minute and 1-hour windows per tenant and model
to ``metering.windows``, each tenant's day and month spend against its budgets
(``schemas/budgets.yaml``) to the compacted ``metering.budgets``, and an alert
to ``metering.alerts`` when a tenant reaches 80% and 100% of a budget (once
per threshold and period). Prices come from ``schemas/prices.yaml``.

Unlike the runner's processors, meter is stateful: it is a faust app (tables
with changelog topics, restored on restart), declared as an ``EngineSpec`` and
started by ``sluice run meter`` through ``run``. How it counts each request
exactly once although faust runs at-least-once: ``processors.meter.state``;
the wiring: ``processors.meter.app``; how it reaches a secured cluster:
``processors.meter.connection``.
"""

from __future__ import annotations

import logging

from processors.meter.settings import MeterSettings
from streams.contracts.catalog import catalog_for
from streams.errors import ConfigurationError
from streams.runtime import kafka, metrics
from streams.runtime.spec import EngineSpec
from streams.settings import Settings

log = logging.getLogger("sluice.meter")


def run(settings: Settings, config: MeterSettings, metrics_port: int | None) -> None:
    """Run one meter worker until SIGTERM (faust's worker handles the signals).

    ``metrics_port`` overrides ``SLUICE_METRICS__PORT``; tracing is set up by
    the caller (``sluice run``), as for every processor.
    """
    import faust  # noqa: PLC0415 (meter's own dependency, only loaded here)

    from processors.meter import observe  # noqa: PLC0415
    from processors.meter.app import OUTPUTS, RESULTS, Meter  # noqa: PLC0415
    from streams.llm.budgets import load_budgets  # noqa: PLC0415
    from streams.llm.pricing import load_prices  # noqa: PLC0415

    # Before anything else: a meter that cannot sign its budgets must not start at all.
    config.budget_signer()
    catalog = catalog_for(settings)
    needed = [RESULTS, *OUTPUTS]
    needed += [
        t for t in (catalog.topic(RESULTS).dlq_topic, catalog.topic(OUTPUTS[0]).dlq_topic) if t
    ]
    missing = kafka.missing_topics(kafka.admin(settings), [catalog.physical(t) for t in needed])
    if missing:
        raise ConfigurationError(
            f"meter: topics missing on {settings.kafka.bootstrap_servers}: "
            f"{', '.join(missing)}. Run `sluice schemas apply` first."
        )
    prices = load_prices(config.prices_path(settings.schemas_dir))
    budgets = load_budgets(config.budgets_path(settings.schemas_dir))
    # Checks the output schemas are registered.
    meter = Meter(settings, config, catalog, prices, budgets)
    log.info(
        "meter: app %s, %d priced models (prices %s), %d tenants with budgets",
        meter.app_id,
        len(prices.models),
        prices.version,
        len(budgets.tenants),
    )
    inputs = [catalog.physical(RESULTS), catalog.physical(OUTPUTS[0])]
    registration = None
    if settings.metrics.enabled:
        wanted = settings.metrics.port if metrics_port is None else metrics_port
        port = metrics.serve_or_any(settings.metrics.host, wanted)
        registration = metrics.register(
            settings,
            processor="meter",
            instance=settings.instance_id(),
            group=meter.app_id,
            inputs=inputs,
            port=port,
        )
    lag = observe.LagReporter(settings, meter.app_id, inputs).start()
    worker = faust.Worker(
        meter.app,
        loglevel=settings.log_level,
        quiet=True,
        redirect_stdouts=False,
        override_logging=False,
    )
    try:
        worker.execute_from_commandline()  # returns (or exits) once the worker stops
    finally:
        lag.close()
        if registration is not None:
            registration.unlink(missing_ok=True)


PROCESSOR = EngineSpec(
    name="meter",
    description="tokens, cost, windows and budgets per tenant (faust-streaming)",
    settings=MeterSettings,
    run=run,
)
