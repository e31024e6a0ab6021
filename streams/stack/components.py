"""The components of the local stack: how each is fetched, configured, started and probed."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import string
import subprocess
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import httpx

from streams.errors import SluiceError
from streams.runtime import maven
from streams.settings import Settings
from streams.stack import kafka_security
from streams.stack.java import find_java
from streams.stack.process import ManagedProcess

INFRA = "infra/local"
#: Written in the Kafka data directory when it is formatted for the secured broker.
SECURITY_MARKER = "sluice-security"


class ComponentError(SluiceError):
    """A component could not be fetched, configured or started."""


class Component(ABC):
    """One process of the local stack."""

    name: str = ""
    title: str = ""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stack = settings.stack
        self.root = settings.stack.root
        self.process = ManagedProcess(
            self.name,
            self.root / "run" / f"{self.name}.pid",
            self.root / "logs" / f"{self.name}.log",
        )

    @property
    def dist_dir(self) -> Path:
        """Downloads (reused across `up`/`down`, kept by `down --purge`)."""
        return self.root / "dist"

    @property
    def data_dir(self) -> Path:
        """Persistent data of this component."""
        return self.root / "data" / self.name

    @property
    def config_dir(self) -> Path:
        """Rendered configuration of this component."""
        return self.root / "config" / self.name

    def template(self, relative: str) -> str:
        """A file from infra/local/, read as text."""
        return (self.settings.project_root / INFRA / relative).read_text()

    def render(self, relative: str, target: Path, **values: object) -> Path:
        """Render an infra/local/ template (``${name}`` placeholders) into ``target`` (0600).

        Owner-only from the first byte: a rendered file may hold a password.
        """
        target.parent.mkdir(parents=True, exist_ok=True)
        text = string.Template(self.template(relative)).substitute(
            {k: str(v) for k, v in values.items()}
        )
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an older rendering may have been readable by others
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        return target

    def before_start(self, report: Callable[[str], None]) -> None:
        """Prepare the cluster for the component; ``up`` calls it just before starting it."""
        del report  # most components need nothing from the others

    def after_start(self, report: Callable[[str], None]) -> None:
        """Configure the healthy component; ``up`` calls it on every run, started now or not."""
        del report  # most components need nothing once they answer

    def resolve_jars(
        self, pom: str, classpath_file: Path, version: str, what: str, progress: maven.Progress
    ) -> None:
        """Resolve ``infra/local/maven/<pom>/pom.xml`` at Kafka ``version``, unless done before.

        The classpath is recorded in ``classpath_file``; it is resolved again when a jar
        it names is gone.
        """
        if classpath_file.exists() and all(
            p.exists() for p in maven.read_classpath(classpath_file)
        ):
            return
        progress(f"fetching {what} {version} jars from Maven Central")
        maven.build_classpath(
            self.settings.project_root / INFRA / "maven" / pom / "pom.xml",
            classpath_file,
            {"kafka.version": version},
            self.stack.maven,
            progress,
        )

    @staticmethod
    def classpath(classpath_file: Path) -> str:
        """The ``-cp`` argument of the jars recorded in ``classpath_file``."""
        return ":".join(str(p) for p in maven.read_classpath(classpath_file))

    @property
    def start_timeout_s(self) -> float:
        """How long `up` waits for the component to become healthy."""
        return self.stack.start_timeout_s

    def environment(self) -> dict[str, str]:
        """Environment variables the component's process needs on top of Sluice's own."""
        return {}

    @abstractmethod
    def fetch(self, progress: maven.Progress) -> None:
        """Download what the component needs, once."""

    @abstractmethod
    def prepare(self) -> None:
        """Write configuration and initialise data directories."""

    @abstractmethod
    def command(self) -> list[str]:
        """The command line that runs the component in the foreground."""

    @abstractmethod
    def address(self) -> str:
        """Where clients reach the component."""

    @abstractmethod
    def probe(self) -> str:
        """A short health detail; raises when the component does not answer."""


class Kafka(Component):
    """Apache Kafka, KRaft single node, from Maven Central jars."""

    name = "kafka"
    title = "Kafka"

    @property
    def classpath_file(self) -> Path:
        """Where the resolved classpath of this Kafka version is recorded."""
        return self.dist_dir / f"kafka-{self.stack.kafka_version}.classpath"

    def fetch(self, progress: maven.Progress) -> None:
        """Resolve kafka_2.13 and its runtime dependencies with Maven."""
        self.resolve_jars("kafka", self.classpath_file, self.stack.kafka_version, "Kafka", progress)

    def _java(self) -> Path:
        return find_java(17, self.stack.java_home)

    @property
    def security_marker(self) -> Path:
        """Written at format time: the data was made for the secured broker, and by which CA."""
        return self.data_dir / SECURITY_MARKER

    def prepare(self) -> None:
        """Render server.properties and format the KRaft storage on first start.

        Formatting stores the SCRAM credentials of the broker and of the operator (the
        broker cannot start without its own, and someone must be able to grant ACLs);
        the other principals are added by ``after_start``.
        """
        settings = self.settings
        properties = self.render(
            "kafka/server.properties",
            self.config_dir / "server.properties",
            kafka_port=self.stack.kafka_port,
            controller_port=self.stack.kafka_controller_port,
            log_dirs=self.data_dir,
            keystore=kafka_security.broker_keystore_path(settings),
            truststore=kafka_security.ca_path(settings),
            broker=kafka_security.BROKER,
            operator=kafka_security.OPERATOR,
            broker_jaas=kafka_security.broker_jaas_config(settings),
        )
        shutil.copy(
            self.settings.project_root / INFRA / "kafka" / "log4j2.properties",
            self.config_dir / "log4j2.properties",
        )
        if (self.data_dir / "meta.properties").exists():
            self._check_formatted_for_security()
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = [str(self._java()), *self._jvm_flags(), "-cp", self.classpath(self.classpath_file)]
        cluster_id = (
            subprocess.run(
                [*base, "kafka.tools.StorageTool", "random-uuid"],
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        scram = [
            argument
            for principal in kafka_security.BOOTSTRAP_PRINCIPALS
            for argument in (
                "--add-scram",
                f"{kafka_security.MECHANISM}=[name={principal},"
                f"password={kafka_security.password(settings, principal)}]",
            )
        ]
        result = subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(properties),
                "--standalone",
                *scram,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ComponentError(
                f"formatting Kafka storage failed:\n{result.stdout}{result.stderr}"
            )
        self.security_marker.write_text(self._security_fingerprint() + "\n")

    def _security_fingerprint(self) -> str:
        """What the marker records: the protocol and the SHA-256 of the local CA's certificate."""
        ca = kafka_security.ca_path(self.settings).read_bytes()
        return f"SASL_SSL {kafka_security.MECHANISM} ca-sha256={hashlib.sha256(ca).hexdigest()}"

    def _check_formatted_for_security(self) -> None:
        """Refuse data formatted before the broker was secured, or for another CA."""
        purge = (
            f"Stop the stack and delete its data with `sluice down --purge` (this deletes every "
            f"topic under {self.data_dir}; downloads and secrets are kept), then `sluice up`"
        )
        if not self.security_marker.is_file():
            raise ComponentError(
                f"the Kafka data in {self.data_dir} was formatted for a broker without TLS and "
                f"SCRAM credentials, which the local stack now requires, so it has no users. "
                f"{purge}."
            )
        if self.security_marker.read_text().strip() != self._security_fingerprint():
            raise ComponentError(
                f"the Kafka data in {self.data_dir} was formatted with credentials other than "
                f"those in {kafka_security.secrets_dir(self.settings)} (were they deleted and "
                f"made again?). Restore that folder from a backup, or: {purge}."
            )

    def after_start(self, report: Callable[[str], None]) -> None:
        """Add (or update) the SCRAM credentials of every other principal, as the operator.

        On every ``up``: a principal added to Sluice after the data was formatted appears,
        and a password file replaced by hand takes effect.
        """
        upserted = kafka_security.upsert_scram_credentials(self.settings)
        report(f"{self.title}: SCRAM credentials of {len(upserted)} principals are up to date")

    def _jvm_flags(self) -> list[str]:
        return [f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}"]

    def command(self) -> list[str]:
        """Run ``java … kafka.Kafka server.properties``."""
        return [
            str(self._java()),
            f"-Xmx{self.stack.kafka_heap}",
            f"-Xms{self.stack.kafka_heap}",
            "-XX:+UseG1GC",
            "-Dsluice.component=kafka",
            *self._jvm_flags(),
            "-cp",
            self.classpath(self.classpath_file),
            "kafka.Kafka",
            str(self.config_dir / "server.properties"),
        ]

    def address(self) -> str:
        """The broker's bootstrap address."""
        return f"127.0.0.1:{self.stack.kafka_port}"

    def probe(self) -> str:
        """Metadata from the broker: broker count and topic count."""
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 (slow import)

        # A plain connect first: librdkafka would log every refused connection.
        with socket.create_connection(("127.0.0.1", self.stack.kafka_port), timeout=2):
            pass
        conf = kafka_security.client_options(self.settings, kafka_security.OPERATOR)
        client = AdminClient({**conf, "socket.timeout.ms": 2000, "log_level": 0})
        metadata = client.list_topics(timeout=3)
        topics = [t for t in metadata.topics if not t.startswith("__")]
        brokers = len(metadata.brokers)
        return f"Kafka {self.stack.kafka_version}, {brokers} broker, {len(topics)} topics"


class SchemaRegistry(Component):
    """Apicurio Registry 3.x, used through its Confluent-compatible API."""

    name = "registry"
    title = "Schema Registry"

    @property
    def home(self) -> Path:
        """The unpacked Quarkus distribution."""
        return self.dist_dir / f"apicurio-registry-{self.stack.registry_version}"

    def fetch(self, progress: maven.Progress) -> None:
        """Download the registry's `all` tar.gz from Maven Central and unpack it."""
        if (self.home / "quarkus-run.jar").exists():
            return
        version = self.stack.registry_version
        progress(f"fetching Apicurio Registry {version} from Maven Central (about 160 MB)")
        downloads = self.dist_dir / "downloads"
        maven.copy_artifact(
            f"io.apicurio:apicurio-registry-app:{version}:tar.gz:all",
            downloads,
            self.stack.maven,
            progress,
        )
        archive = downloads / f"apicurio-registry-app-{version}-all.tar.gz"
        progress(f"unpacking {archive.name}")
        partial = self.home.with_suffix(".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        partial.rename(self.home)
        archive.unlink()

    def prepare(self) -> None:
        """Render application.properties with ports and the H2 file location."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.render(
            "registry/application.properties",
            self.config_dir / "application.properties",
            registry_port=self.stack.registry_port,
            management_port=self.stack.registry_management_port,
            data_dir=self.data_dir,
        )

    def command(self) -> list[str]:
        """Run ``java -jar quarkus-run.jar`` on Java 21+ (Apicurio 3.x needs it)."""
        java = find_java(21, self.stack.registry_java_home, newest=True)
        return [
            str(java),
            f"-Xmx{self.stack.registry_heap}",
            "-Dsluice.component=registry",
            f"-Dquarkus.config.locations=file:{self.config_dir / 'application.properties'}",
            "-jar",
            str(self.home / "quarkus-run.jar"),
        ]

    def address(self) -> str:
        """The Confluent-compatible endpoint clients use."""
        return f"http://127.0.0.1:{self.stack.registry_port}/apis/ccompat/v7"

    def probe(self) -> str:
        """Subject count from the Confluent API."""
        response = httpx.get(f"{self.address()}/subjects", timeout=3)
        response.raise_for_status()
        return f"Apicurio {self.stack.registry_version}, {len(response.json())} subjects"
