"""Settings of the infer processor (``SLUICE_INFER__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.llm.model_catalog import DEFAULT_LANE, LANE_NAME


class InferSettings(BaseSettings):
    """How infer batches requests and how hard it pushes Triton."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_INFER__", frozen=True, extra="ignore")

    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="Most requests per Triton call for batching models; default and upper "
        "bound: the model's max_batch_size in the model catalog.",
    )
    max_batch_latency_ms: int = Field(
        5,
        ge=1,
        description="Longest a request waits, after the first of its poll, for more to fill "
        "it. Under load polls fill while the last one runs; raise it for a GPU that needs "
        "bigger micro-batches at moderate load (bench/README.md, gateway latency).",
    )
    rate_limits_file: Path | None = Field(
        None,
        description="Default <schemas>/rate_limits.yaml. infer reads only its shares: each "
        "tenant's weight when tenants compete (equal shares without the file). Read once at "
        "start.",
    )
    max_records_per_poll: int = Field(
        512, ge=1, description="Requests taken from Kafka per poll (and per transaction)."
    )
    max_in_flight: int = Field(
        8, ge=1, description="Triton calls (micro-batches or generations) running at once."
    )
    verdict_public_keys: list[str] = Field(
        default_factory=list,
        description="Guard's Ed25519 public keys (base64 of the raw 32 bytes, JSON list): "
        "infer processes only records of inference.requests.safe that one of them signed, "
        "and dead-letters the rest (UnverifiedVerdict). Required. To rotate, add guard's new "
        "public key, then switch guard's key, then drop the old one once its records are "
        "consumed. `sluice up` keeps the local one in <state_dir>/secrets/verdict-public-key.",
    )
    lane: str = Field(
        DEFAULT_LANE,
        pattern=LANE_NAME,
        description="The lane this instance serves: one declared under `lanes:` in the model "
        "catalog (infra/triton/models.yaml), or `default` (every model no lane names, and "
        "unknown models). Each lane is its own consumer group (<group prefix>.infer for the "
        "default lane, <group prefix>.infer-<lane> for the others) with its own transactions, "
        "so a lane of fast models is not held back by a slow one; replicas of a lane share "
        "its group. Every lane reads all of inference.requests.safe and skips the others' "
        "requests.",
    )
    cache_max_entries: int = Field(
        10_000,
        ge=0,
        description="Most answers this process keeps in its response cache (embeddings, and "
        "completions at temperature 0, answered again for the same tenant, model version and "
        "input without a Triton call); 0 disables the cache. Each replica has its own.",
    )
    cache_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="Most payload bytes in the response cache (output text as UTF-8 plus 8 "
        "per embedding value); the least recently used answers go first.",
    )
    cache_ttl_s: float = Field(
        300.0,
        ge=0,
        description="Seconds a cached answer may serve repeats; it holds raw model output in "
        "memory, so keep it short. 0 disables the cache.",
    )
    chunk_linger_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="How long the producer of streamed requests' deltas (inference.chunks.raw) "
        "waits to fill a batch: the latency a delta may gain before a caller sees it. It is "
        "a producer of its own, idempotent and not transactional, so deltas never wait for "
        "infer's transaction.",
    )
    device: str = Field(
        "",
        description="Device label put on results (e.g. 'cuda:0 H100'); empty: 'triton'. "
        "`sluice run` fills it from the local stack's Triton when one is running.",
    )

    def rate_limits_path(self, schemas_dir: Path) -> Path:
        """The tenants' shares: ``rate_limits_file``, or ``rate_limits.yaml`` in ``schemas_dir``."""
        return self.rate_limits_file or schemas_dir / "rate_limits.yaml"


def group_of(settings: InferSettings) -> str:
    """The consumer group (less the group prefix) of an infer instance of ``settings.lane``."""
    return "infer" if settings.lane == DEFAULT_LANE else f"infer-{settings.lane}"
