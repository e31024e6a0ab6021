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
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Root of the Sluice checkout: schemas/, infra/ and connectors/ live here.
PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Where ``sluice up`` keeps the local broker's CA and each principal's password, under
#: the state directory (see streams/stack/kafka_security.py, which writes them).
LOCAL_KAFKA_SECRETS = Path("secrets") / "kafka"
#: The local CA's certificate (what clients trust), inside ``LOCAL_KAFKA_SECRETS``.
LOCAL_KAFKA_CA = "ca.pem"
#: One file per SCRAM user name, inside ``LOCAL_KAFKA_SECRETS``.
LOCAL_KAFKA_PASSWORDS = "passwords"
#: The principal of the ``sluice`` CLI, the demo and the tests on the local stack.
LOCAL_KAFKA_OPERATOR = "sluice-operator"
#: The only SASL mechanism the local broker enables.
LOCAL_KAFKA_MECHANISM = "SCRAM-SHA-512"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StackSettings(_Frozen):
    """The local, Docker-free stack that ``sluice up`` starts."""

    state_dir: Path = Field(Path(".sluice"), description="Data, logs, pids and downloads.")
    kafka_version: str = Field(
        "4.4.0",
        description="Apache Kafka version `sluice up` fetches from Maven Central (kafka_2.13).",
    )
    kafka_port: int = Field(
        9092, description="The local broker's SASL_SSL listener port (TLS, SCRAM-SHA-512)."
    )
    kafka_controller_port: int = Field(
        9093,
        description="The local broker's KRaft controller listener port.",
    )
    kafka_heap: str = Field("1g", description="JVM heap of the local broker (-Xmx and -Xms).")
    processor_principals: bool = Field(
        True,
        description="true (the default): `sluice run` connects each processor (and `sluice "
        "up` the Connect worker) to the local broker as its own principal (sluice-validate, "
        "...), limited by the ACLs of schemas/acls.yaml, which `sluice schemas apply` and "
        "`sluice demo` apply; false: they act as sluice-operator, a super user.",
    )
    registry_version: str = Field(
        "3.3.3",
        description="Apicurio Registry version `sluice up` fetches from Maven Central.",
    )
    registry_port: int = Field(
        8081,
        description="The local Schema Registry's HTTP port (Confluent API under /apis/ccompat/v7).",
    )
    registry_management_port: int = Field(
        9081,
        description="The local registry's management (health) port.",
    )
    registry_heap: str = Field("512m", description="JVM heap of the local Schema Registry.")
    connect_port: int = Field(8083, description="REST port of the Kafka Connect worker.")
    connect_heap: str = Field("768m", description="JVM heap of the local Kafka Connect worker.")
    connect_group_id: str = Field(
        "sluice-connect", description="Group of the Connect worker; prefixes its internal topics."
    )
    connect_version: str = Field(
        "4.3.1",
        description="Kafka Connect worker and FileStream plugin version. Maven Central has no "
        "connect-file 4.4.0, and the 4.3 plugin cannot run on a 4.4 worker (it calls "
        "AppInfoParser, which 4.4 moved); Debezium 3.6 is built on Kafka 4.3 too. "
        "A 4.3 worker talks to the 4.4 broker like any client.",
    )
    debezium_version: str = Field(
        "3.6.1.Final", description="Debezium PostgreSQL connector plugin (tar.gz, plugin)."
    )
    java_home: Path | None = Field(
        None, description="JDK for Kafka (17+); default: JAVA_HOME or the java on PATH."
    )
    registry_java_home: Path | None = Field(
        None, description="JDK for Apicurio Registry 3.x (21+); default: the newest JDK found."
    )
    maven: str = Field("mvn", description="Maven executable used to fetch the jars.")
    start_timeout_s: float = Field(
        120.0,
        description="Longest wait for one component to become healthy in `sluice up`.",
    )
    components: list[str] = Field(
        default_factory=lambda: ["kafka", "registry", "connect", "triton"],
        description="What `sluice up` starts without --only, e.g. "
        'SLUICE_STACK__COMPONENTS=\'["kafka","registry"]\' to leave Connect and Triton out.',
    )
    triton_http_port: int = Field(
        8000,
        description="The local Triton's HTTP port (health, readiness).",
    )
    triton_grpc_port: int = Field(
        8001,
        description="The local Triton's gRPC port (what infer and guard call).",
    )
    triton_metrics_port: int = Field(
        8002,
        description="The local Triton's Prometheus metrics port.",
    )
    triton_python: Path | None = Field(
        None,
        description="Interpreter the Triton venv is created from (PyTriton ships stubs for "
        "3.8-3.13); default: the one running Sluice.",
    )
    triton_venv: Path | None = Field(
        None, description="The Triton venv (torch, PyTriton); default: <state_dir>/venvs/triton."
    )
    triton_models: list[str] = Field(
        default_factory=list,
        description="Models the local Triton serves; default: every catalog entry with `serve`.",
    )
    triton_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: CUDA (fp16) when available, else CPU (fp32)."
    )
    triton_torch_threads: int = Field(
        1,
        ge=0,
        description="torch's CPU threads in the Triton server (0: one per core). "
        "1 by default: on a small CPU shared with Kafka and the JVMs, torch's thread "
        "barriers stall whenever a core is taken (see infra/triton/README.md).",
    )
    triton_start_timeout_s: float = Field(
        600.0, description="Importing torch and loading the models can take minutes."
    )

    @property
    def root(self) -> Path:
        """The state directory as an absolute path."""
        return self.state_dir.expanduser().resolve()

    @property
    def triton_venv_dir(self) -> Path:
        """Where the Triton venv lives (created by `sluice up`, reused while unchanged)."""
        if self.triton_venv is not None:
            return self.triton_venv.expanduser().resolve()
        return self.root / "venvs" / "triton"


class KafkaSettings(_Frozen):
    """How every client reaches Kafka."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description=(
            "Kafka bootstrap servers (host:port, comma-separated) every client connects to."
        ),
    )
    options: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka options passed through to every client (JSON object).",
    )
    sasl_password: SecretStr | None = Field(
        None, description="Set as sasl.password on every client; kept out of logs."
    )

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        """Librdkafka configuration shared by every producer, consumer and admin client."""
        # librdkafka logs at info (6) by default; warnings and errors are what users act on.
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, "log_level": 4}
        conf.update(self.options)
        if self.sasl_password is not None:
            conf["sasl.password"] = self.sasl_password.get_secret_value()
        conf.update(overrides)
        return conf


class RegistrySettings(_Frozen):
    """The Confluent-compatible Schema Registry."""

    url: str = Field(
        "http://127.0.0.1:8081/apis/ccompat/v7",
        description="Schema Registry URL (Confluent-compatible API).",
    )
    basic_auth_user_info: SecretStr | None = Field(
        None, description="user:password for a registry behind basic auth."
    )
    max_schema_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Largest writer schema (its JSON document, in bytes) a decoder accepts; "
        "a record written with a larger one is dead-lettered as SchemaTooComplex.",
    )
    max_schema_depth: int = Field(
        64,
        ge=4,
        description="Deepest writer schema a decoder accepts, counted in nested record, "
        "array, map and union levels (Sluice's own schemas are at most 4 deep); a record "
        "written with a deeper one is dead-lettered as SchemaTooComplex.",
    )
    subject_refresh_s: float = Field(
        30.0,
        gt=0,
        description="Least time between two reads of a subject's versions. A record whose "
        "schema id is not one of its topic's subject re-reads them at most this often, so "
        "a version registered later is accepted within this time and an unknown id never "
        "costs a registry call per record.",
    )
    timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest wait for one Schema Registry request. confluent-kafka's client "
        "has none by default, so a registry that accepts a request and never answers would "
        "hang the caller; past this the request fails and the batch is retried later.",
    )

    def client_config(self) -> dict[str, Any]:
        """Configuration for confluent_kafka's SchemaRegistryClient."""
        conf: dict[str, Any] = {"url": self.url, "timeout": self.timeout_s}
        if self.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = self.basic_auth_user_info.get_secret_value()
        return conf


class RunnerSettings(_Frozen):
    """The processor runner: batching, transactions and shutdown."""

    batch_size: int = Field(
        2000, ge=1, description="Most records per poll, and so per transaction."
    )
    batch_timeout_ms: int = Field(
        200, ge=1, description="Longest wait to fill a batch, from its first record."
    )
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
    retry_backoff_initial_s: float = Field(
        0.5,
        description=(
            "First wait before retrying a batch that hit a TransientError; doubles on each retry."
        ),
    )
    retry_backoff_max_s: float = Field(
        30.0,
        description="Longest wait between two retries of a batch.",
    )
    shutdown_timeout_s: float = Field(
        30.0,
        description="On SIGTERM, longest wait for the producer to flush after the last commit.",
    )
    fair_window_records: int = Field(
        10_000,
        ge=0,
        description="Records a processor that schedules fairly across tenants (guard, infer) "
        "reads ahead and holds, so that another tenant's records behind one tenant's backlog "
        "are taken in their turn; 0 takes records in offset order.",
    )
    fair_window_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1,
        description="Bytes (keys and values) that read-ahead window may hold.",
    )
    max_dlq_message_chars: int = Field(
        1000,
        description="Longest sluice.error.message header; longer reasons are cut with an ellipsis.",
    )


class TritonSettings(_Frozen):
    """How processors reach Triton, and which models they may route to."""

    url: str = Field("127.0.0.1:8001", description="Triton's gRPC endpoint (host:port).")
    models_file: Path = Field(
        PROJECT_ROOT / "infra" / "triton" / "models.yaml",
        description="The model catalog: routing, tensor names, limits, price keys.",
    )
    timeout_s: float = Field(60.0, gt=0, description="Longest wait for one Triton call.")


class ConnectSettings(_Frozen):
    """How the CLI reaches a Kafka Connect worker's REST API."""

    url: str = Field(
        "http://127.0.0.1:8083", description="REST API of any worker of the Connect cluster."
    )
    timeout_s: float = Field(30.0, gt=0, description="Longest wait for one REST call.")


class TelemetrySettings(_Frozen):
    """OpenTelemetry tracing."""

    exporter: Literal["none", "kafka", "console", "otlp"] = Field(
        "none",
        description="kafka: spans to telemetry.spans (and on to ClickHouse); otlp: to a "
        "collector; console: to stdout.",
    )
    otlp_endpoint: str = Field(
        "http://127.0.0.1:4317",
        description="OpenTelemetry collector (OTLP gRPC) when the exporter is `otlp`.",
    )
    root_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of traces started by Sluice that are recorded."
    )
    remote_sample_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Share of records whose producer's traceparent says 'sampled' that get a "
        "span (drawn at random: the producer chooses the trace id and the flag). 1.0 follows "
        "every sampled producer within remote_spans_per_second.",
    )
    remote_spans_per_second: float = Field(
        1000.0,
        gt=0.0,
        description="At most this many spans a second per process follow a producer's "
        "'sampled' flag (a one-second burst, then this rate); records over it continue "
        "their trace unsampled, so a flood of sampled traceparents cannot force a span per "
        "record. Traces Sluice starts itself are not counted.",
    )


class MetricsSettings(_Frozen):
    """Prometheus metrics endpoint of each processor."""

    enabled: bool = Field(True, description="Serve Prometheus metrics from each processor replica.")
    host: str = Field(
        "127.0.0.1",
        description=(
            "Address the metrics endpoint listens on (0.0.0.0 to be scraped from other hosts)."
        ),
    )
    port: int = Field(9400, ge=0, description="0 picks a free port; the chosen one is logged.")


class ClickHouseSettings(_Frozen):
    """Where analytics live: an HTTP ClickHouse server, or chdb in-process (the default)."""

    url: str = Field(
        "",
        description="http(s)://user:password@host:8123/database for a server; chdb:///path for "
        "the embedded engine. Default: chdb under the state directory (<state_dir>/clickhouse).",
    )
    database: str = Field("sluice", description="Database of Sluice's tables and views.")
    connect_timeout_s: float = Field(
        5.0,
        description="Longest wait to connect to a ClickHouse server.",
    )
    send_receive_timeout_s: float = Field(
        60.0,
        description="Longest wait for one ClickHouse request (an insert or a query).",
    )
    query_host: str = Field(
        "127.0.0.1",
        description="Interface on which the process that owns an embedded database answers "
        "`sluice sql` from other processes (loopback only unless you mean it).",
    )
    avro_ingest: bool = Field(
        True,
        description="Hand ClickHouse the raw Confluent Avro bytes of the high-volume topics "
        "(it decodes them, fetching schemas from the registry); false: decode in Python.",
    )
    avro_registry_url: str = Field(
        "",
        description="The Schema Registry as ClickHouse reaches it (Confluent API, may carry "
        "user:password@). Default: the processors' SLUICE_REGISTRY__URL.",
    )


class DeadLetterSettings(_Frozen):
    """How dead-letter topics of encrypted data classes keep the original bytes."""

    encryption_key: SecretStr | None = Field(
        None,
        description="Base64 of 32 random bytes: the AES-256-GCM key that encrypts the "
        "original bytes of records dead-lettered to a topic whose data class is `encrypted` "
        "(e.g. inference.requests.dlq). Required by every processor that may dead-letter "
        "such a record, and by `sluice dlq replay` of such a topic. `sluice up` keeps one in "
        "<state_dir>/secrets/dead-letter-key. Make one with `openssl rand -base64 32`.",
    )
    previous_keys: list[SecretStr] = Field(
        default_factory=list,
        description="Older keys (base64, JSON list) still accepted for decryption, so keys "
        "can rotate: set the new key, move the old one here until its dead letters expire.",
    )


class TenantSettings(_Frozen):
    """Which tenant a producer writes for, and the key that proves it (the SDK's)."""

    id: str | None = Field(
        None,
        description="The tenant this producer sends inference requests for (exact id, as "
        "registered). The SDK refuses a request for any other tenant.",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="Base64 of the tenant's raw 32-byte Ed25519 private key: the SDK signs "
        "every inference request with it, and guard dead-letters requests no registered "
        "tenant signed. `sluice tenants add <id>` makes one for the local stack "
        "(<state_dir>/secrets/tenants/<id>.key).",
    )


class Settings(BaseSettings):
    """All of Sluice's settings, read from ``SLUICE_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="SLUICE_",
        env_nested_delimiter="__",
        frozen=True,
        extra="ignore",
    )

    project_root: Path = Field(
        PROJECT_ROOT,
        description=(
            "The checkout holding schemas/, infra/ and connectors/; default: where Sluice is "
            "installed from."
        ),
    )
    topic_prefix: str = Field(
        "", description="Put in front of every topic name, e.g. 'staging.' to share a cluster."
    )
    schemas_path: Path | None = Field(
        None, description="Catalog, schemas and contracts; default <project_root>/schemas."
    )
    stack: StackSettings = StackSettings()
    kafka: KafkaSettings = KafkaSettings()
    registry: RegistrySettings = RegistrySettings()
    triton: TritonSettings = TritonSettings()
    connect: ConnectSettings = ConnectSettings()
    runner: RunnerSettings = RunnerSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    metrics: MetricsSettings = MetricsSettings()
    clickhouse: ClickHouseSettings = ClickHouseSettings()
    dead_letters: DeadLetterSettings = DeadLetterSettings()
    tenant: TenantSettings = TenantSettings()
    log_level: str = Field("INFO", description="Python log level of every command and processor.")

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
        connect_port = stack.get("connect_port", defaults["connect_port"].default)
        kafka = _as_dict(data.get("kafka"))
        if "bootstrap_servers" not in kafka:
            kafka["bootstrap_servers"] = f"127.0.0.1:{kafka_port}"
            kafka = _as_local_operator(kafka, stack.get("state_dir"))
        registry = _as_dict(data.get("registry"))
        registry.setdefault("url", f"http://127.0.0.1:{registry_port}/apis/ccompat/v7")
        triton_port = stack.get("triton_grpc_port", defaults["triton_grpc_port"].default)
        triton = _as_dict(data.get("triton"))
        triton.setdefault("url", f"127.0.0.1:{triton_port}")
        connect = _as_dict(data.get("connect"))
        connect.setdefault("url", f"http://127.0.0.1:{connect_port}")
        return {**data, "kafka": kafka, "registry": registry, "triton": triton, "connect": connect}

    @property
    def schemas_dir(self) -> Path:
        """Where the Avro schemas, the topic catalog and the contracts live."""
        return self.schemas_path or self.project_root / "schemas"

    @property
    def clickhouse_url(self) -> str:
        """The ClickHouse DSN: the configured one, or chdb under the state directory."""
        return self.clickhouse.url or f"chdb://{self.stack.root / 'clickhouse'}"

    def instance_id(self) -> str:
        """Id of this process among the replicas of a processor."""
        if self.runner.instance_id:
            return self.runner.instance_id
        return f"{socket.gethostname()}-{os.getpid()}"


def local_kafka_client(state_dir: Path, principal: str) -> tuple[dict[str, str], str] | None:
    """The librdkafka options and password of ``principal`` on the local stack in ``state_dir``.

    None when ``sluice up`` has not made the local broker's credentials there.
    """
    secrets = state_dir.expanduser().resolve() / LOCAL_KAFKA_SECRETS
    ca, password_file = secrets / LOCAL_KAFKA_CA, secrets / LOCAL_KAFKA_PASSWORDS / principal
    if not (ca.is_file() and password_file.is_file()):
        return None
    options = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": LOCAL_KAFKA_MECHANISM,
        "sasl.username": principal,
        "ssl.ca.location": str(ca),
    }
    return options, password_file.read_text(encoding="ascii").strip()


def _as_local_operator(kafka: dict[str, Any], state_dir: Any) -> dict[str, Any]:
    """Clients of the local stack act as its operator unless told how to authenticate.

    Only when the bootstrap servers are the stack's (not set explicitly), and neither
    ``security.protocol`` (``SLUICE_KAFKA__OPTIONS``) nor ``SLUICE_KAFKA__SASL_PASSWORD``
    is set: explicit settings always win. Other options are kept.
    """
    options = dict(kafka.get("options") or {})
    if "security.protocol" in options or kafka.get("sasl_password") is not None:
        return kafka
    default_dir = StackSettings.model_fields["state_dir"].default
    local = local_kafka_client(Path(state_dir or default_dir), LOCAL_KAFKA_OPERATOR)
    if local is None:
        return kafka
    operator, password = local
    return {**kafka, "options": {**operator, **options}, "sasl_password": password}


def _as_dict(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    return dict(value)


def without_password(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***``: for messages and logs.

    Registry, Connect and ClickHouse URLs may carry ``user:password@``; anything a
    person or a log sees goes through this first.
    """
    parsed = urlsplit(url)
    if parsed.password is None:
        return url
    userinfo = f"{parsed.username or ''}:***"
    host = parsed.netloc.rsplit("@", 1)[1]
    return urlunsplit(parsed._replace(netloc=f"{userinfo}@{host}"))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once from the environment."""
    return Settings()
