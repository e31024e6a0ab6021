"""Settings of the meter processor (``SLUICE_METER__*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.runtime.signing import METER_BUDGET, Signer

BUDGET_SIGNING_KEY_SETTING = "SLUICE_METER__BUDGET_SIGNING_KEY"


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
    budget_signing_key: SecretStr | None = Field(
        None,
        description="Base64 of a raw 32-byte Ed25519 private key: meter signs every record it "
        "writes to metering.budgets with it, and guard ignores what it did not sign. "
        "Required. `sluice up` keeps one in <state_dir>/secrets/budget-signing-key; guard "
        "gets the public key (SLUICE_GUARD__BUDGET_PUBLIC_KEYS).",
    )
    max_clock_skew_s: float = Field(
        300.0,
        ge=0,
        description="How far ahead of meter's clock a result may be dated and still be "
        "metered at its own time; one dated further ahead (up to max_future_s) is metered "
        "at its arrival, so no producer can open windows in the future.",
    )
    max_future_s: float = Field(
        86400.0,
        gt=0,
        description="A result dated further than this ahead of meter's clock, or before "
        "2000, is absurd: it goes to inference.results.dlq (ImplausibleTimestamp) instead "
        "of being metered. At least max_clock_skew_s.",
    )
    sweep_every: int = Field(
        10_000, ge=1, description="Events between two sweeps of expired state (per partition)."
    )

    @model_validator(mode="after")
    def _future_bound_covers_the_skew(self) -> MeterSettings:
        if self.max_future_s < self.max_clock_skew_s:
            raise ValueError(
                "SLUICE_METER__MAX_FUTURE_S must be at least SLUICE_METER__MAX_CLOCK_SKEW_S "
                f"({self.max_clock_skew_s:g} s): raise it, or lower the skew"
            )
        return self

    def budget_signer(self) -> Signer:
        """The signer of meter's budget records; a clear error when the key is missing."""
        key = self.budget_signing_key
        secret = key.get_secret_value() if key is not None else None
        return Signer.from_secret(secret, BUDGET_SIGNING_KEY_SETTING, METER_BUDGET)

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
    def max_future_ms(self) -> int:
        """``max_future_s`` in milliseconds."""
        return int(self.max_future_s * 1000)

    @property
    def window_retention_ms(self) -> int:
        """``window_retention_s`` in milliseconds, as the state keeps time."""
        return int(self.window_retention_s * 1000)
