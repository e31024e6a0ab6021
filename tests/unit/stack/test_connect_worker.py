"""The local Kafka Connect worker's rendered configuration and command line (no JVM started)."""

from __future__ import annotations

import stat

import pytest

from streams.settings import Settings, StackSettings
from streams.stack import COMPONENTS, Stack, kafka_security
from streams.stack.connect_worker import MAIN_CLASS, Connect


def worker(tmp_path, **stack) -> Connect:
    settings = Settings(stack=StackSettings(state_dir=tmp_path, **stack))
    kafka_security.ensure_kafka_secrets(settings)  # what `sluice up` does first
    return Connect(settings)


def properties(component: Connect) -> dict[str, str]:
    component.prepare()
    path = component.config_dir / "worker.properties"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "it holds the worker's password"
    text = path.read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")
    return {key.strip(): value.strip() for key, value in pairs}


def test_worker_properties_follow_the_settings(tmp_path):
    props = properties(worker(tmp_path, kafka_port=29092, connect_port=28083))
    assert props["bootstrap.servers"] == "127.0.0.1:29092"
    assert props["listeners"] == "http://127.0.0.1:28083"
    assert props["plugin.path"] == str(tmp_path / "plugins")
    assert props["group.id"] == "sluice-connect"
    for store in ("config", "offset", "status"):
        assert props[f"{store}.storage.replication.factor"] == "1"
    assert props["config.storage.topic"] == "_sluice-connect-configs"
    assert props["exactly.once.source.support"] == "enabled"


@pytest.mark.parametrize("own_principal", [False, True])
def test_every_client_of_the_worker_logs_in_over_tls(tmp_path, own_principal):
    component = worker(tmp_path, processor_principals=own_principal)
    props = properties(component)
    user = kafka_security.CONNECT if own_principal else kafka_security.OPERATOR
    secret = kafka_security.password(component.settings, user)
    ca = str(kafka_security.ca_path(component.settings))
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert props[f"{prefix}security.protocol"] == "SASL_SSL"
        assert props[f"{prefix}sasl.mechanism"] == "SCRAM-SHA-512"
        assert props[f"{prefix}ssl.truststore.type"] == "PEM"
        assert props[f"{prefix}ssl.truststore.location"] == ca
        assert props[f"{prefix}sasl.jaas.config"] == (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{user}" password="{secret}";'
        )
    assert "PLAINTEXT" not in (component.config_dir / "worker.properties").read_text()


def test_command_runs_connect_distributed_with_the_rendered_files(tmp_path, monkeypatch):
    component = worker(tmp_path, connect_heap="300m")
    component.classpath_file.parent.mkdir(parents=True)
    component.classpath_file.write_text("/jars/a.jar\n/jars/b.jar\n")
    monkeypatch.setattr(
        "streams.stack.connect_worker.find_java", lambda major, home=None: f"/jdk{major}/bin/java"
    )
    command = component.command()
    assert command[0] == "/jdk17/bin/java"
    assert "-Xmx300m" in command
    assert command[command.index("-cp") + 1] == "/jars/a.jar:/jars/b.jar"
    assert command[-2:] == [MAIN_CLASS, str(component.config_dir / "worker.properties")]


def test_connect_starts_after_the_broker_and_the_registry(tmp_path):
    names = [c.name for c in COMPONENTS]
    assert names.index("connect") > max(names.index("kafka"), names.index("registry"))
    started = [c.name for c in Stack(Settings(stack=StackSettings(state_dir=tmp_path))).components]
    assert started == ["kafka", "registry", "connect", "triton"]


def test_client_url_follows_the_stack_port(monkeypatch):
    monkeypatch.delenv("SLUICE_CONNECT__URL", raising=False)
    monkeypatch.setenv("SLUICE_STACK__CONNECT_PORT", "28083")
    assert Settings().connect.url == "http://127.0.0.1:28083"
