"""Settings of the OpenAI-compatible gateway (``SLUICE_GATEWAY__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Where the gateway listens, what it accepts, and how long it waits for the pipeline."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_GATEWAY__", frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for all).")
    port: int = Field(8080, ge=1, le=65535, description="HTTP port.")
    secrets_dir: Path | None = Field(
        None,
        description="Directory of api-keys.yaml and api-key-pepper (`sluice keys` writes them); "
        "default: the local stack's <state_dir>/secrets.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    max_inputs: int = Field(
        256,
        ge=1,
        description="Most texts in one /v1/embeddings input or /v1/completions prompt list.",
    )
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Longest a call waits for the pipeline's answer before it gets 504; the "
        "request may still be served and metered.",
    )
    key_reload_s: float = Field(
        2.0, gt=0, description="How often the API-key registry file is checked for changes."
    )
    max_in_flight: int = Field(
        4096,
        ge=1,
        description="Most requests this replica waits on at once (an embeddings call with N "
        "inputs counts N); past it, calls get 503 at once instead of queueing without bound.",
    )
    pipeline_concurrency: int = Field(
        64,
        ge=1,
        description="Most pipeline requests this replica has produced and not yet had "
        "answered; the others wait in one queue per tenant and are let in by weighted fair "
        "queuing (a tenant's burst delays the others by its share only). Enough to keep "
        "infer's batches full; more lets a burst reach Kafka ahead of everyone else.",
    )
    max_queued_per_tenant: int = Field(
        1024,
        ge=0,
        description="Most requests of one tenant waiting for a pipeline slot on this replica "
        "(an embeddings call with N inputs counts N); a call that would queue more gets 429 "
        "rate_limit_exceeded with Retry-After.",
    )
    idempotency_window_s: float = Field(
        600.0,
        ge=0,
        # guard's default request_id_window_s: guard's memory of request ids is what keeps
        # a retry from being served twice, so this window must not outlast it.
        le=21_600,
        description="How long a call made with an Idempotency-Key can be retried and answered "
        "from its first outcome, in seconds; each replica keeps the outcomes of that long and "
        "reads them back at start before it reports ready (0: no cache, no catch-up; a retry "
        "of a finished call then times out). At most guard's default request_id_window_s "
        "(6 h); keep it within SLUICE_GUARD__REQUEST_ID_WINDOW_S when that is lowered: a "
        "retry after guard forgot the id is a new request, served and billed again.",
    )
    idempotency_max_entries: int = Field(
        100_000,
        ge=1,
        description="Most request ids whose outcomes a replica keeps for retries (and "
        "Idempotency-Keys whose body it remembers); past it the oldest leave first.",
    )
    stream_keepalive_s: float = Field(
        15.0,
        ge=0,
        description="How long a started stream may stay silent before the gateway sends an "
        "SSE comment (': keep-alive'), which clients skip, so that proxies and load "
        "balancers do not close it as idle (0: never). Nothing is sent before a stream's "
        "first delta or outcome (a refusal must stay an HTTP error): a proxy's idle timeout "
        "must outlast the wait for the first token.",
    )
    rate_limits_file: Path | None = Field(
        None,
        description="Requests and tokens per minute per tenant and per API key, read at start; "
        "default <schemas>/rate_limits.yaml. Each replica enforces them on the calls it "
        "serves.",
    )

    def rate_limits_path(self, schemas_dir: Path) -> Path:
        """The rate limits: ``rate_limits_file``, or ``rate_limits.yaml`` in ``schemas_dir``."""
        return self.rate_limits_file or schemas_dir / "rate_limits.yaml"
