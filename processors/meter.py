"""meter: tokens, cost, windows and budgets per tenant, on faust-streaming.

Reads ``inference.results``; writes one usage event per request to
``metering.usage``, tumbling 1-minute and 1-hour windows per tenant and model
to ``metering.windows``, each tenant's day and month spend against its budgets
(``schemas/budgets.yaml``) to the compacted ``metering.budgets``, and an alert
to ``metering.alerts`` when a tenant reaches 80% and 100% of a budget (once
per threshold and period). Prices come from ``schemas/prices.yaml``.

Unlike the runner's processors, meter is stateful: it is a faust app (tables
with changelog topics, restored on restart), started by ``sluice run meter``
through ``main``. How it counts each request exactly once although faust runs
at-least-once: ``processors.metering.state``; the wiring:
``processors.metering.app``.
"""

from __future__ import annotations

import logging

from streams import kafka, metrics
from streams.catalog import catalog_for
from streams.settings import Settings
from streams.tracing import setup_tracing

DESCRIPTION = "tokens, cost, windows and budgets per tenant (faust-streaming)"
log = logging.getLogger("sluice.meter")


def main(settings: Settings) -> None:
    """Run one meter worker until SIGTERM (faust's worker handles the signals)."""
    import faust  # noqa: PLC0415 (meter's own dependency, only loaded here)

    from processors.metering import observe  # noqa: PLC0415
    from processors.metering.app import OUTPUTS, RESULTS, Meter  # noqa: PLC0415
    from streams.budgets import load_budgets  # noqa: PLC0415
    from streams.pricing import load_prices  # noqa: PLC0415

    catalog = catalog_for(settings)
    needed = [RESULTS, *OUTPUTS]
    needed += [
        t for t in (catalog.topic(RESULTS).dlq_topic, catalog.topic(OUTPUTS[0]).dlq_topic) if t
    ]
    missing = kafka.missing_topics(kafka.admin(settings), [catalog.physical(t) for t in needed])
    if missing:
        raise SystemExit(
            f"meter: topics missing on {settings.kafka.bootstrap_servers}: "
            f"{', '.join(missing)}. Run `sluice schemas apply` first."
        )
    prices = load_prices(settings.prices_file)
    budgets = load_budgets(settings.budgets_file)
    meter = Meter(settings, catalog, prices, budgets)  # checks the output schemas are registered
    log.info(
        "meter: app %s, %d priced models (prices %s), %d tenants with budgets",
        meter.app_id,
        len(prices.models),
        prices.version,
        len(budgets.tenants),
    )
    provider = setup_tracing("sluice-meter", settings)
    inputs = [catalog.physical(RESULTS), catalog.physical(OUTPUTS[0])]
    port = None
    registration = None
    if settings.metrics.enabled:
        port = metrics.serve_or_any(settings.metrics.host, settings.metrics.port)
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
        if provider is not None:
            provider.shutdown()  # flushes the last spans
