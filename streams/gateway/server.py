"""``sluice run gateway``: the gateway's app, its Kafka dispatcher and uvicorn, put together.

The HTTP stack (``sluice[gateway]``: Starlette, uvicorn) is imported only here, when
the gateway runs, so every other command works without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from streams.contracts.catalog import catalog_for
from streams.errors import ConfigurationError
from streams.gateway.kafka_dispatch import TenantSigners, from_settings
from streams.gateway.key_store import KeyStore, LiveKeys
from streams.gateway.settings import GatewaySettings
from streams.llm.model_catalog import load_models
from streams.llm.rate_limits import load_rate_limits
from streams.runtime.spec import EngineSpec
from streams.settings import Settings

log = logging.getLogger("sluice.gateway")

#: Where the local stack keeps each tenant's private signing key, under the secrets directory.
TENANT_KEYS_DIR = "tenants"


def secrets_directory(settings: Settings, gateway: GatewaySettings) -> Path:
    """The API-key and tenant-key files: the configured directory, or the local stack's."""
    return gateway.secrets_dir or settings.stack.root / "secrets"


def serve(settings: Settings, gateway: GatewaySettings, _metrics_port: int | None) -> None:
    """Serve the gateway until SIGTERM or Ctrl-C (its metrics are on its own /metrics)."""
    try:
        import uvicorn  # noqa: PLC0415 (the optional HTTP stack, only when serving)

        from streams.gateway.app import create_app  # noqa: PLC0415 (imports Starlette)
    except ImportError as exc:
        raise ConfigurationError(
            f"the gateway needs its HTTP stack ({exc.name} is missing): "
            "pip install 'sluice[gateway]'"
        ) from None
    # Read first: a malformed file stops the start with a message naming the entry.
    rate_limits = load_rate_limits(gateway.rate_limits_path(settings.schemas_dir))
    directory = secrets_directory(settings, gateway)
    keys = LiveKeys(KeyStore(directory), check_every_s=gateway.key_reload_s)
    catalog = catalog_for(settings)
    dispatcher = from_settings(
        settings,
        catalog,
        TenantSigners(directory / TENANT_KEYS_DIR),
        idempotency_window_s=gateway.idempotency_window_s,
        idempotency_max_entries=gateway.idempotency_max_entries,
    )

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        # Positioning the outcome consumer asks the broker for end offsets: off the loop.
        await asyncio.to_thread(dispatcher.start, asyncio.get_running_loop())
        # Ready (/readyz) once the idempotency window of outcomes is read back, if any.
        log.info("gateway listening on http://%s:%d", gateway.host, gateway.port)
        try:
            yield
        finally:
            await asyncio.to_thread(dispatcher.stop)

    app = create_app(
        load_models(), keys, dispatcher, gateway, rate_limits=rate_limits, lifespan=lifespan
    )
    # uvicorn handles SIGTERM: stops accepting, finishes the calls in flight, then the
    # lifespan's exit stops the dispatcher (which flushes the producer).
    uvicorn.run(app, host=gateway.host, port=gateway.port, log_level="info", access_log=True)


GATEWAY: EngineSpec[GatewaySettings] = EngineSpec(
    name="gateway",
    description="OpenAI-compatible HTTP API over the Kafka pipeline",
    settings=GatewaySettings,
    run=serve,
)
