"""Configuration of every Sluice component.

One frozen pydantic-settings class per component; all read environment variables
with the ``SLUICE_`` prefix and ``__`` for nesting, e.g.
``SLUICE_KAFKA__BOOTSTRAP_SERVERS`` or ``SLUICE_RUNNER__BATCH_SIZE``. librdkafka
options that Sluice does not model are passed through verbatim from
``SLUICE_KAFKA__OPTIONS`` (a JSON object), so any security or tuning setting of
the user's cluster works without a code change.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Root of the Sluice checkout: schemas/, infra/ and connectors/ live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StackSettings(_Frozen):
    """The local, Docker-free stack that ``sluice up`` starts."""

    state_dir: Path = Field(Path(".sluice"), description="Data, logs, pids and downloads.")
    kafka_version: str = "4.4.0"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "1g"
    registry_version: str = "3.3.3"
    registry_port: int = 8081
    registry_management_port: int = 9081
    registry_heap: str = "512m"
    java_home: Path | None = Field(
        None, description="JDK for Kafka (17+); default: JAVA_HOME or the java on PATH."
    )
    registry_java_home: Path | None = Field(
        None, description="JDK for Apicurio Registry 3.x (21+); default: the newest JDK found."
    )
    maven: str = Field("mvn", description="Maven executable used to fetch the jars.")
    start_timeout_s: float = 120.0

    @property
    def root(self) -> Path:
        """The state directory as an absolute path."""
        return self.state_dir.expanduser().resolve()


class KafkaSettings(_Frozen):
    """How every client reaches Kafka."""

    bootstrap_servers: str = "127.0.0.1:9092"
    options: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka options passed through to every client (JSON object).",
    )
    sasl_password: SecretStr | None = Field(
        None, description="Set as sasl.password on every client; kept out of logs."
    )

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """Librdkafka configuration shared by every producer, consumer and admin client."""
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers}
        conf.update(self.options)
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(overrides)
        return conf


class RegistrySettings(_Frozen):
    """The Confluent-compatible Schema Registry."""

    url: str = "http://127.0.0.1:8081/apis/ccompat/v7"
    basic_auth_user_info: SecretStr | None = Field(
        None, description="user:password for a registry behind basic auth."
    )

    def client_config(self) -> dict[str, Any]:
        """Configuration for confluent_kafka's SchemaRegistryClient."""
        conf: dict[str, Any] = {"url": self.url}
        if self.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return conf


class RunnerSettings(_Frozen):
    """The processor runner: batching, transactions and shutdown."""

    batch_size: int = Field(
        2000, ge=1, description="Most records per poll, and so per transaction."
    )
    batch_timeout_ms: int = Field(200, ge=1, description="Longest wait to fill a batch.")
    transaction_timeout_ms: int = Field(
        10_000,
        ge=1000,
        description="Open transactions of a crashed instance are aborted after this long "
        "(Kafka Streams uses the same 10 s default under exactly-once).",
    )
    instance_id: str = Field(
        "", description="Stable id of this replica; default: hostname plus a random suffix."
    )
    group_prefix: str = Field("sluice", description="Consumer groups are <prefix>.<processor>.")
    retry_backoff_initial_s: float = 0.5
    retry_backoff_max_s: float = 30.0
    shutdown_timeout_s: float = 30.0
    max_dlq_message_chars: int = 1000


class TelemetrySettings(_Frozen):
    """OpenTelemetry tracing."""

    exporter: Literal["none", "console", "otlp"] = "none"
    otlp_endpoint: str = "http://127.0.0.1:4317"
    root_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of traces started by Sluice that are recorded."
    )


class MetricsSettings(_Frozen):
    """Prometheus metrics endpoint of each processor."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9400, ge=0, description="0 picks a free port; the chosen one is logged.")


class ClickHouseSettings(_Frozen):
    """Where analytics live: an HTTP ClickHouse server, or chdb in-process (the default)."""

    url: str = Field(
        "",
        description="http(s)://user:password@host:8123/database for a server; chdb:///path for "
        "the embedded engine. Default: chdb under the state directory (<state_dir>/clickhouse).",
    )
    database: str = Field("sluice", description="Database of Sluice's tables and views.")
    connect_timeout_s: float = 5.0
    send_receive_timeout_s: float = 60.0
    query_host: str = Field(
        "127.0.0.1",
        description="Interface on which the process that owns an embedded database answers "
        "`sluice sql` from other processes (loopback only unless you mean it).",
    )


class MeterSettings(_Frozen):
    """The meter processor: prices, budgets and the state it keeps."""

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
    sweep_every: int = Field(
        10_000, ge=1, description="Events between two sweeps of expired state (per partition)."
    )


class Settings(BaseSettings):
    """All of Sluice's settings, read from ``SLUICE_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    project_root: Path = PROJECT_ROOT
    schemas_path: Path | None = Field(
        None, description="Catalog, schemas and contracts; default <project_root>/schemas."
    )
    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    runner: RunnerSettings = RunnerSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    metrics: MetricsSettings = MetricsSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    meter: MeterSettings = MeterSettings()
    log_level: str = "INFO"

    @model_validator(mode="before")
    @classmethod
    def _point_clients_at_local_stack(cls, data: Any) -> Any:
        """Clients default to the local stack's ports, so changing a port changes both."""
        if not isinstance(data, dict):
            return data
        stack = data.get("stack") or {}
        if isinstance(stack, StackSettings):
            stack = stack.model_dump()
        defaults = StackSettings.model_fields
        kafka_port = stack.get("kafka_port", defaults["kafka_port"].default)
        registry_port = stack.get("registry_port", defaults["registry_port"].default)
        kafka = _as_dict(data.get("kafka"))
        kafka.setdefault("bootstrap_servers", f"127.0.0.1:{kafka_port}")
        registry = _as_dict(data.get("registry"))
        registry.setdefault("url", f"http://127.0.0.1:{registry_port}/apis/ccompat/v7")
        return {**data, "kafka": kafka, "registry": registry}

    @property
    def schemas_dir(self) -> Path:
        """Where the Avro schemas, the topic catalog and the contracts live."""
        return self.schemas_path or self.project_root / "schemas"

    @property
    def clickhouse_url(self) -> str:
        """The ClickHouse DSN: the configured one, or chdb under the state directory."""
        return self.clickhouse.url or f"chdb://{self.stack.root / 'clickhouse'}"

    @property
    def prices_file(self) -> Path:
        """The model price table."""
        return self.meter.prices_file or self.schemas_dir / "prices.yaml"

    @property
    def budgets_file(self) -> Path:
        """The tenants' budgets."""
        return self.meter.budgets_file or self.schemas_dir / "budgets.yaml"

    def instance_id(self) -> str:
        """Id of this process among the replicas of a processor."""
        if self.runner.instance_id:
            return self.runner.instance_id
        return f"{socket.gethostname()}-{os.getpid()}"


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
