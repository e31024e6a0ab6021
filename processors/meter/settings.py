"""Settings of the meter processor (``SLUICE_METER__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class MeterSettings(BaseSettings):
    """The meter processor: prices, budgets and the state it keeps."""

    model_config = SettingsConfigDict(env_prefix="SLUICE_METER__", frozen=True, extra="ignore")

    prices_file: Path | None = Field(None, description="Default <schemas>/prices.yaml.")
    budgets_file: Path | None = Field(None, description="Default <schemas>/budgets.yaml.")
    app_id: str = Field("meter", description="faust app id: consumer group and state topics.")
    dedup_records: int = Field(
        200_000,
        ge=1000,
        description="How many usage records (per partition) a request id is remembered for, to "
        "drop a repeated usage event; repeats follow their original within one commit "
        "interval of meter, far fewer records than this.",
    )
    window_retention_s: float = Field(
        2 * 86400.0,
        gt=0,
        description="Windows that ended longer ago than this (wall clock) are final: they leave "
        "meter's state, and later events for them are metered but not added to windows.",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="How far ahead of meter's clock a usage event may be dated; one dated "
        "further ahead (or before 2000) is metered at its arrival, so no producer can open "
        "windows in the future.",
    )
    sweep_every: int = Field(
        10_000, ge=1, description="Events between two sweeps of expired state (per partition)."
    )

    def prices_path(self, schemas_dir: Path) -> Path:
        """The model price table: ``prices_file``, or ``prices.yaml`` in ``schemas_dir``."""
        return self.prices_file or schemas_dir / "prices.yaml"

    def budgets_path(self, schemas_dir: Path) -> Path:
        """The tenants' budgets: ``budgets_file``, or ``budgets.yaml`` in ``schemas_dir``."""
        return self.budgets_file or schemas_dir / "budgets.yaml"

    @property
    def max_clock_skew_ms(self) -> int:
        """``max_clock_skew_s`` in milliseconds."""
        return int(self.max_clock_skew_s * 1000)

    @property
    def window_retention_ms(self) -> int:
        """``window_retention_s`` in milliseconds, as the state keeps time."""
        return int(self.window_retention_s * 1000)
