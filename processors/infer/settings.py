"""Settings of the infer processor (``SLUICE_INFER__*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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
        50, ge=1, description="Longest a request waits for its micro-batch to fill."
    )
    max_records_per_poll: int = Field(
        512, ge=1, description="Requests taken from Kafka per poll (and per transaction)."
    )
    max_in_flight: int = Field(
        8, ge=1, description="Triton calls (micro-batches or generations) running at once."
    )
    device: str = Field(
        "",
        description="Device label put on results (e.g. 'cuda:0 H100'); empty: 'triton'. "
        "`sluice run` fills it from the local stack's Triton when one is running.",
    )
