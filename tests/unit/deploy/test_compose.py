"""docker-compose.yml, checked statically (no Docker engine here): pinned images, ports,
volumes, start order, and every processor's environment against its settings classes."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

import processors
from processors.drift.settings import DriftSettings
from processors.guard.settings import GuardSettings
from processors.infer.settings import InferSettings
from processors.meter.settings import MeterSettings
from processors.validate.processor import ValidateSettings
from streams.cli.run import SERVICES as RUN_SERVICES
from streams.gateway.settings import GatewaySettings
from streams.llm.model_catalog import DEFAULT_LANE, load_models
from streams.settings import PROJECT_ROOT, Settings

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
#: Settings classes of their own, by env prefix (the rest nest under Settings).
COMPONENT_SETTINGS: dict[str, type[BaseSettings]] = {
    "DRIFT": DriftSettings,
    "GATEWAY": GatewaySettings,
    "GUARD": GuardSettings,
    "INFER": InferSettings,
    "METER": MeterSettings,
    "VALIDATE": ValidateSettings,
}
_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def substitute(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, with the default or a stand-in."""
    return _VAR.sub(
        lambda m: m.group(2) if m.group(2) and ":-" in m.group(0) else "x" * 32, str(value)
    )


def processor_services() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in SERVICES.items() if s.get("command", [None])[0] == "run"}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_image_is_pinned_or_built_here(name: str) -> None:
    service = SERVICES[name]
    image = service.get("image", "")
    assert image, f"{name} has no image"
    repository, _, tag = image.rpartition(":")
    assert repository and tag and tag != "latest", f"{name}: {image} is not pinned"
    build = service.get("build")
    if build:
        assert (PROJECT_ROOT / build["context"] / build["dockerfile"]).is_file()


def host_ports(mapping: str) -> range:
    """The host ports of a short-syntax mapping: [ip:]host[-end]:container."""
    parts = str(mapping).split(":")
    assert len(parts) in (2, 3), f"{mapping}: not [ip:]host:container"
    first, _, last = parts[-2].partition("-")
    return range(int(first), int(last or first) + 1)


def test_host_ports_are_unique() -> None:
    seen: dict[int, str] = {}
    for name, service in SERVICES.items():
        for mapping in service.get("ports", []):
            for port in host_ports(mapping):
                assert port not in seen, f"{name} and {seen.get(port)} both publish {port}"
                seen[port] = name


def test_host_ports_reads_ranges_and_addresses() -> None:
    assert host_ports("127.0.0.1:8080-8089:8080") == range(8080, 8090)
    assert host_ports("3000:3000") == range(3000, 3001)


def test_volumes_exist() -> None:
    declared = set(COMPOSE.get("volumes", {}))
    for name, service in SERVICES.items():
        for volume in service.get("volumes", []):
            if str(volume).startswith("${"):  # a folder the operator provides: required
                assert re.match(r"^\$\{\w+:\?[^}]+\}(/[\w.-]+)*:/", str(volume)), volume
                continue
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (PROJECT_ROOT / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"


def test_start_order_waits_for_health() -> None:
    for name, service in SERVICES.items():
        for dependency, condition in (service.get("depends_on") or {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition.get("condition") == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no healthcheck"


def test_triton_reserves_a_gpu() -> None:
    devices = SERVICES["triton"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


def test_every_processor_runs_and_every_processor_has_a_service() -> None:
    services = processor_services()
    running = {s["command"][1] for s in services.values()}
    assert running == {*processors.PROCESSORS, *RUN_SERVICES}, "a component without a service"
    for name, service in services.items():
        if name not in RUN_SERVICES:
            assert "ports" not in service, "replicas must not publish host ports (--scale)"


def test_the_gateway_scales_and_is_checked_for_readiness() -> None:
    gateway = SERVICES["gateway"]
    assert "container_name" not in gateway, "a fixed name forbids --scale"
    env = gateway["environment"]
    assert env["SLUICE_GATEWAY__HOST"] == "0.0.0.0"  # noqa: S104 (in its container; see ports)
    port = int(env["SLUICE_GATEWAY__PORT"])
    # One host port per replica, from a range, on the loopback (a TLS balancer in front).
    [mapping] = gateway["ports"]
    address, _, container = str(mapping).rpartition(":")
    assert address.startswith("127.0.0.1:") and int(container) == port
    assert len(host_ports(mapping)) >= 3, "room for --scale gateway=3"
    # The image has Python, not curl: the check is urllib on /readyz of its own port.
    test = gateway["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert f"http://127.0.0.1:{port}/readyz" in test[3] and "curl" not in test[3]
    dockerfile = (PROJECT_ROOT / "infra" / "docker" / "sluice.Dockerfile").read_text()
    assert "curl" not in dockerfile
    assert re.search(r'pip install[^\n]*"\.\[[^\]]*\bgateway\b', dockerfile), "the HTTP stack"
    # Its secrets: a required folder, read-only, where SLUICE_GATEWAY__SECRETS_DIR points.
    target = env["SLUICE_GATEWAY__SECRETS_DIR"]
    mounts = [str(v) for v in gateway["volumes"]]
    assert any(re.match(r"^\$\{\w+:\?[^}]+\}:" + re.escape(target) + ":ro$", v) for v in mounts)


def _field(model: type[BaseModel], parts: list[str]) -> bool:
    name, rest = parts[0].lower(), parts[1:]
    field = model.model_fields.get(name)
    if field is None:
        return False
    if not rest:
        return True
    annotation = field.annotation
    return (
        isinstance(annotation, type)
        and issubclass(annotation, BaseModel)
        and _field(annotation, rest)
    )


@pytest.mark.parametrize("name", [*sorted(processor_services()), "init"])
def test_processor_environment_matches_its_settings(name: str, monkeypatch) -> None:
    env = {k: substitute(v) for k, v in SERVICES[name]["environment"].items()}
    for key in env:
        assert key.startswith("SLUICE_"), key
        parts = key.removeprefix("SLUICE_").split("__")
        own = COMPONENT_SETTINGS.get(parts[0])
        known = _field(own, parts[1:]) if own and len(parts) > 1 else _field(Settings, parts)
        assert known, f"{name}: {key} is not a setting of Sluice"
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # values parse, too
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    if "SLUICE_TRITON__URL" in env:  # only the services that call Triton are given it
        assert settings.triton.url == "triton:8001"
    for component in COMPONENT_SETTINGS.values():
        component()


def test_only_guard_holds_the_verdict_signing_key_and_infer_its_public_key() -> None:
    for name, service in processor_services().items():
        env = service.get("environment", {})
        runs = service["command"][1]  # infer-embeddings runs infer (a lane of its own)
        assert ("SLUICE_GUARD__VERDICT_SIGNING_KEY" in env) == (runs == "guard"), name
        assert ("SLUICE_INFER__VERDICT_PUBLIC_KEYS" in env) == (runs == "infer"), name
    guard = SERVICES["guard"]["environment"]["SLUICE_GUARD__VERDICT_SIGNING_KEY"]
    infer = SERVICES["infer"]["environment"]["SLUICE_INFER__VERDICT_PUBLIC_KEYS"]
    assert ":?" in guard and ":?" in infer, "required: compose refuses to start without them"


def test_every_infer_lane_has_a_service() -> None:
    """A lane declared in the model catalog with no service would leave its models unserved."""
    lanes = {
        service["environment"].get("SLUICE_INFER__LANE", DEFAULT_LANE)
        for service in processor_services().values()
        if service["command"][1] == "infer"
    }
    assert lanes == {DEFAULT_LANE, *load_models().lanes}
