"""Settings of the validate processor (``SLUICE_VALIDATE__*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ValidateSettings(BaseSettings):
    """Which datasets one validate replica checks, and how it watches null rates."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_VALIDATE__", frozen=True, extra="ignore")
    datasets: list[str] = Field(
        default_factory=list, description="Datasets to validate; empty means all in the catalog."
    )
    null_rate_window: int = Field(1000, ge=10, description="Records per null-rate window.")
    max_json_depth: int = Field(
        64,
        ge=2,
        le=512,
        description="Deepest nesting of arrays and objects accepted in a record's JSON "
        "(plain or in a RawEvent's payload); deeper JSON is dead-lettered as InvalidJson "
        "before it is parsed, since parsers recurse once per level.",
    )
