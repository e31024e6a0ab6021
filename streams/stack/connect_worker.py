"""Kafka Connect in distributed mode, from Maven Central jars, with its connector plugins.

The worker's own classpath (connect-runtime, connect-json, a log4j2 binding) is
resolved by Maven like the broker's. Connector plugins are not on it: each lives
in its own folder under ``plugin.path`` (``<state>/plugins/<plugin>/``), which is
how Connect isolates their dependencies (Debezium brings its own JDBC driver and
protobuf). Plugins are downloads, so ``down --purge`` keeps them.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import httpx

from streams.runtime import maven
from streams.sdk.connect_client import worker_message
from streams.stack import kafka_security
from streams.stack.components import INFRA, Component, ComponentError
from streams.stack.connect_acls import ensure_connect_worker_acls
from streams.stack.java import find_java

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"
#: The worker's own clients (no prefix) and those it opens for connectors.
CLIENT_PREFIXES = ("", "producer.", "consumer.", "admin.")


def _escaped(value: str) -> str:
    """``value`` as a Java properties value (a backslash starts an escape there)."""
    return value.replace("\\", "\\\\")


class Connect(Component):
    """A Kafka Connect distributed worker whose REST API ``sluice connect`` drives."""

    name = "connect"
    title = "Kafka Connect"

    @property
    def classpath_file(self) -> Path:
        """Where the resolved classpath of the worker is recorded."""
        return self.dist_dir / f"connect-{self.stack.connect_version}.classpath"

    @property
    def plugin_path(self) -> Path:
        """Connect's ``plugin.path``: one folder per connector plugin."""
        return self.root / "plugins"

    @property
    def file_plugin_jar(self) -> Path:
        """The FileStream connectors' jar inside its plugin folder."""
        version = self.stack.connect_version
        return self.plugin_path / "connect-file" / f"connect-file-{version}.jar"

    @property
    def debezium_plugin_jar(self) -> Path:
        """The jar whose presence says that Debezium's plugin is unpacked."""
        version = self.stack.debezium_version
        folder = self.plugin_path / "debezium-connector-postgres"
        return folder / f"debezium-connector-postgres-{version}.jar"

    def fetch(self, progress: maven.Progress) -> None:
        """Resolve the worker's classpath, then fetch the connector plugins, each once."""
        self.resolve_jars(
            "connect", self.classpath_file, self.stack.connect_version, "Kafka Connect", progress
        )
        if not self.file_plugin_jar.exists():
            self._fetch_file_plugin(progress)
        if not self.debezium_plugin_jar.exists():
            self._fetch_debezium(progress)

    def _fetch_file_plugin(self, progress: maven.Progress) -> None:
        version = self.stack.connect_version
        progress(f"fetching the FileStream connector plugin (connect-file {version})")
        folder = self.file_plugin_jar.parent
        shutil.rmtree(folder, ignore_errors=True)  # one version per plugin folder
        maven.copy_artifact(
            f"org.apache.kafka:connect-file:{version}:jar", folder, self.stack.maven, progress
        )

    def _fetch_debezium(self, progress: maven.Progress) -> None:
        version = self.stack.debezium_version
        progress(f"fetching Debezium's PostgreSQL connector plugin {version} (about 25 MB)")
        downloads = self.dist_dir / "downloads"
        maven.copy_artifact(
            f"io.debezium:debezium-connector-postgres:{version}:tar.gz:plugin",
            downloads,
            self.stack.maven,
            progress,
        )
        archive = downloads / f"debezium-connector-postgres-{version}-plugin.tar.gz"
        target = self.debezium_plugin_jar.parent
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        # The archive holds one top-level folder, debezium-connector-postgres/.
        unpacked = partial / "debezium-connector-postgres"
        if not unpacked.is_dir():
            raise ComponentError(f"{archive.name} does not hold debezium-connector-postgres/")
        shutil.rmtree(target, ignore_errors=True)
        unpacked.rename(target)
        shutil.rmtree(partial, ignore_errors=True)
        archive.unlink()

    def prepare(self) -> None:
        """Render worker.properties and the log4j2 configuration."""
        self.render(
            "connect/worker.properties",
            self.config_dir / "worker.properties",
            kafka_port=self.stack.kafka_port,
            rest_port=self.stack.connect_port,
            group_id=self.stack.connect_group_id,
            topic_prefix=f"_{self.stack.connect_group_id}",
            plugin_path=self.plugin_path,
            kafka_security=self._kafka_security(),
        )
        shutil.copy(
            self.settings.project_root / INFRA / "connect" / "log4j2.properties",
            self.config_dir / "log4j2.properties",
        )

    def before_start(self, report: Callable[[str], None]) -> None:
        """Grant the worker its group, transactional ids and internal topics, as the operator.

        Only when it logs in as its own principal: it could not start without them.
        """
        if kafka_security.local_principal(self.settings, self.name) == kafka_security.OPERATOR:
            return
        from confluent_kafka.admin import AdminClient  # noqa: PLC0415 (slow import)

        options = kafka_security.client_options(self.settings, kafka_security.OPERATOR)
        made = ensure_connect_worker_acls(self.settings, AdminClient({**options, "log_level": 0}))
        if made:
            report(f"{self.title}: granted {kafka_security.CONNECT} {len(made)} ACL bindings")

    def _kafka_security(self) -> str:
        """The worker's Kafka login, for its own clients and every client it opens for connectors.

        Connect reads unprefixed settings for its group membership and internal topics,
        and ``producer.``/``consumer.``/``admin.`` ones for the clients of connector tasks
        (exactly-once sources also use an admin client): the same login for all four.
        """
        principal = kafka_security.local_principal(self.settings, self.name)
        properties = kafka_security.java_client_properties(self.settings, principal)
        lines = [f"# As {principal}."]
        for prefix in CLIENT_PREFIXES:
            lines += [f"{prefix}{k}={_escaped(v)}" for k, v in sorted(properties.items())]
        return "\n".join(lines)

    def command(self) -> list[str]:
        """Java … ConnectDistributed worker.properties."""
        return [
            str(find_java(17, self.stack.java_home)),
            f"-Xmx{self.stack.connect_heap}",
            "-XX:+UseG1GC",
            "-Dsluice.component=connect",
            f"-Dlog4j2.configurationFile={self.config_dir / 'log4j2.properties'}",
            "-cp",
            self.classpath(self.classpath_file),
            MAIN_CLASS,
            str(self.config_dir / "worker.properties"),
        ]

    def address(self) -> str:
        """The worker's REST API."""
        return f"http://127.0.0.1:{self.stack.connect_port}"

    def probe(self) -> str:
        """Healthy once the worker has joined its group and read its configs (``/health``)."""
        health = httpx.get(f"{self.address()}/health", timeout=3)
        if health.status_code != 200:
            raise ComponentError(worker_message(health))
        info = httpx.get(self.address(), timeout=3).json()
        connectors = httpx.get(f"{self.address()}/connectors", timeout=3).json()
        return f"Kafka Connect {info.get('version', '?')}, {len(connectors)} connectors"
