"""docker-compose.yml's hardening, checked statically: no default secrets, nothing
published that only services use, ClickHouse users per role, and networks that let each
service reach what its configuration names and let Triton reach almost nothing else."""

from __future__ import annotations

import functools
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from streams.settings import PROJECT_ROOT

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
CLICKHOUSE = PROJECT_ROOT / "infra" / "clickhouse"
USERS_XML = CLICKHOUSE / "users.d" / "sluice-users.xml"
TENANT_READER = CLICKHOUSE / "access" / "tenant_reader.sql"
DATASOURCES = PROJECT_ROOT / "infra" / "grafana" / "provisioning" / "datasources" / "sluice.yaml"
COLLECTOR = PROJECT_ROOT / "infra" / "otel" / "collector.yaml"
PROMETHEUS = PROJECT_ROOT / "infra" / "prometheus" / "prometheus.yml"
#: Config files of the stack that may hold credentials.
CONFIG_FILES = [DATASOURCES, COLLECTOR, PROMETHEUS]
#: Services only other services use: never published on the host.
INTERNAL = [
    "schema-registry",
    "connect",
    "triton",
    "prometheus",
    "alertmanager",
    "otel-collector",
    "clickhouse",
]
#: Who may share a network with Triton: its callers, and Prometheus for its metrics.
TRITON_PEERS = {"infer", "infer-embeddings", "guard", "prometheus"}
_SECRET_KEY = re.compile(r"password|secret|passwd|_key$|token|credential", re.IGNORECASE)
#: Settings that hold where mounted secrets are, not a secret: each must be the target of a
#: read-only mount whose source is a required variable (checked below).
SECRET_LOCATIONS = {"SLUICE_GATEWAY__SECRETS_DIR"}
_REQUIRED = re.compile(r"^\$\{\w+:\?[^}]+\}$")
_REFERENCE = re.compile(r"^\$(\w+|\{(env:)?\w+\})$")  # a config file's ${env:X} or $X
_DEFAULTED = re.compile(r"\$\{\w+:?-")
#: scheme://user:password@host: read with a pattern, since a ${VAR:?message} has a "?".
_CREDENTIALS = re.compile(r"^\w+://(?P<user>[^:@/]+):(?P<password>.+)@[\w.-]+(:\d+)?(/.*)?$")


@functools.cache
def _users_root() -> ET.Element:
    """The ClickHouse users file (read when a test asks: a missing file fails that test)."""
    return ET.parse(USERS_XML).getroot()  # noqa: S314 (the repository's own file)


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (dotted key, scalar value) of a parsed YAML document."""
    if isinstance(node, dict):
        return [pair for k, v in node.items() for pair in _walk(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [pair for i, v in enumerate(node) for pair in _walk(v, f"{path}[{i}]")]
    return [(path, node)]


def _networks(name: str) -> set[str]:
    networks = SERVICES[name].get("networks") or []
    return set(networks if isinstance(networks, list) else networks.keys())


def _hosts(value: Any) -> set[str]:
    """The compose services a setting's value names (URLs, host:port, broker lists)."""
    hosts = set()
    plain = re.sub(r"\$\{[^}]*\}", "x", str(value))  # a ${VAR:?message} has spaces
    for item in plain.split(","):
        part = item.strip()
        if not part or " " in part:
            continue
        match = re.match(r"^(?:\w+://)?(?:[^@/]*@)?([\w.-]+)(?::\d+)?(?:/.*)?$", part)
        if match and match.group(1) in SERVICES:
            hosts.add(match.group(1))
    return hosts


# -- secrets ----------------------------------------------------------------------------


def test_no_secret_has_a_default_in_compose() -> None:
    for line in (PROJECT_ROOT / "docker-compose.yml").read_text().splitlines():
        if _SECRET_KEY.search(line.split(":")[0]) or "@" in line:
            assert not _DEFAULTED.search(line), f"a secret with a default: {line.strip()}"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_secret_in_the_environment_is_required(name: str) -> None:
    for key, raw in (SERVICES[name].get("environment") or {}).items():
        value = str(raw)
        if key in SECRET_LOCATIONS:
            mounts = [str(v) for v in SERVICES[name].get("volumes", [])]
            pattern = r"^\$\{\w+:\?[^}]+\}:" + re.escape(value) + ":ro$"
            assert any(re.match(pattern, m) for m in mounts), f"{name}: {key} mounts no secret"
        elif _SECRET_KEY.search(key):
            assert _REQUIRED.match(value), f"{name}: {key} is not ${{{key}:?...}}: {value}"
        credentials = _CREDENTIALS.match(value)
        if credentials:  # a password inside a URL
            password = credentials["password"]
            assert _REQUIRED.match(password), f"{name}: {key} carries a literal password"


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_files_take_secrets_from_the_environment(path: Path) -> None:
    for key, value in _walk(yaml.safe_load(path.read_text())):
        if _SECRET_KEY.search(key.rsplit(".", 1)[-1]) and value not in (None, ""):
            assert _REFERENCE.match(str(value)), f"{path.name}: {key} is a literal: {value}"


def test_clickhouse_passwords_come_from_required_variables() -> None:
    passwords = list(_users_root().iter("password"))
    assert passwords
    for password in passwords:
        env = password.get("from_env")
        assert env and not (password.text or "").strip(), "a literal ClickHouse password"
        required = SERVICES["clickhouse"]["environment"].get(env, "")
        assert _REQUIRED.match(str(required)), f"{env} is not required by compose"


# -- what is published ----------------------------------------------------------------


@pytest.mark.parametrize("name", INTERNAL)
def test_internal_services_publish_no_port(name: str) -> None:
    assert not SERVICES[name].get("ports"), f"{name} publishes {SERVICES[name]['ports']}"


def test_only_grafana_and_kafka_and_the_gateway_on_loopback_are_published() -> None:
    published = {name: s["ports"] for name, s in SERVICES.items() if s.get("ports")}
    assert set(published) == {"grafana", "kafka", "gateway"}
    # Kafka's external listener is for the operator's CLI on this host; the gateway speaks
    # plain HTTP with bearer keys, for a TLS load balancer on this host: loopback only.
    for name in ("kafka", "gateway"):
        assert all(str(p).startswith("127.0.0.1:") for p in published[name]), name


# -- networks -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_names_its_networks(name: str) -> None:
    # A service without networks would join compose's default network, beside anything.
    assert _networks(name), f"{name} has no networks"
    assert _networks(name) <= set(COMPOSE.get("networks") or {}), f"{name}: undeclared network"


def test_triton_shares_networks_with_its_callers_only() -> None:
    peers = {n for n in SERVICES if n != "triton" and _networks(n) & _networks("triton")}
    assert peers == TRITON_PEERS


def _file_targets() -> dict[str, set[str]]:
    """The services named in the config files that a service mounts."""
    scraped: set[str] = set()
    for job in yaml.safe_load(PROMETHEUS.read_text())["scrape_configs"]:
        for discovery in job.get("dns_sd_configs", []):
            scraped |= set(discovery["names"])
        for static in job.get("static_configs", []):
            scraped |= {target.rsplit(":", 1)[0] for target in static["targets"]}
    # Where Prometheus sends its alerts.
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    for alertmanager in prometheus.get("alerting", {}).get("alertmanagers", []):
        for static in alertmanager.get("static_configs", []):
            scraped |= {target.rsplit(":", 1)[0] for target in static["targets"]}
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    grafana = {s.get("jsonData", {}).get("host") or urlsplit(s["url"]).hostname for s in sources}
    exporters = yaml.safe_load(COLLECTOR.read_text())["exporters"].values()
    collector = {str(urlsplit(e["endpoint"]).hostname) for e in exporters}
    return {"prometheus": scraped, "grafana": grafana, "otel-collector": collector}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_reaches_what_it_names(name: str) -> None:
    service = SERVICES[name]
    targets = set(service.get("depends_on") or {}) | _file_targets().get(name, set())
    for value in (service.get("environment") or {}).values():
        targets |= _hosts(value)
    for target in sorted(targets - {name}):
        assert target in SERVICES, f"{name} names {target}, which is no service"
        assert _networks(name) & _networks(target), f"{name} cannot reach {target}"


def test_clickhouse_reaches_the_registry_for_avro_inserts() -> None:
    # The sink's AvroConfluent inserts make ClickHouse fetch writer schemas itself.
    assert _networks("clickhouse") & _networks("schema-registry")


def test_clickhouse_is_reached_by_the_services_that_log_in_only() -> None:
    peers = {n for n in SERVICES if n != "clickhouse" and _networks(n) & _networks("clickhouse")}
    assert peers == {"init", "sink", "cli", "otel-collector", "grafana", "schema-registry"}


def test_the_processors_reach_the_collector_when_set_to_otlp() -> None:
    processors = [n for n, s in SERVICES.items() if (s.get("command") or [None])[0] == "run"]
    for name in processors:
        assert _networks(name) & _networks("otel-collector"), name
        assert _networks(name) & _networks("prometheus"), name  # scraped on :9400


# -- ClickHouse users -----------------------------------------------------------------


def _users() -> dict[str, ET.Element]:
    users = _users_root().find("users")
    assert users is not None
    return {user.tag: user for user in users}


def _grants(user: ET.Element) -> list[str]:
    """The words of a user's GRANT queries, upper-case."""
    text = " ".join(query.text or "" for query in user.iter("query"))
    return re.findall(r"[A-Z_]+", text.upper())


def test_clickhouse_has_a_user_per_role() -> None:
    users = _users()
    assert {"sluice_admin", "sluice_sink", "sluice_otel", "sluice_reader"} <= set(users)
    assert "ALL" in _grants(users["sluice_admin"])
    assert "ROLE" in _grants(users["sluice_admin"])  # creates tenant readers
    for writer in ("sluice_sink", "sluice_otel"):
        grants = _grants(users[writer])
        assert "INSERT" in grants
        for forbidden in ("ALTER", "CREATE", "DROP", "ALL", "TRUNCATE", "OPTION"):
            assert forbidden not in grants, f"{writer} may {forbidden}"


def test_the_reader_may_only_select() -> None:
    reader = _users()["sluice_reader"]
    grants = _grants(reader)
    assert "SELECT" in grants
    for forbidden in ("INSERT", "ALTER", "CREATE", "DROP", "ALL", "TRUNCATE", "OPTION"):
        assert forbidden not in grants, f"the reader may {forbidden}"
    assert reader.findtext("access_management") in (None, "0")
    profile = reader.findtext("profile")
    readonly = _users_root().findtext(f"profiles/{profile}/readonly")
    assert readonly in ("1", "2"), "the reader's profile must be read-only"


def test_users_with_grants_set_no_other_access_control() -> None:
    # ClickHouse refuses to start when one user has both (a restart loop in compose).
    others = ("access_management", "allow_databases", "allow_dictionaries")
    others += ("named_collection_control", "show_named_collections_secrets")
    for name, user in _users().items():
        if user.find("grants") is not None:
            assert not [o for o in others if user.find(o) is not None], name


def test_the_default_user_answers_on_localhost_only() -> None:
    default = _users()["default"]
    networks = default.find("networks")
    assert networks is not None and networks.get("replace") == "replace"
    assert {ip.text for ip in networks.iter("ip")} <= {"::1", "127.0.0.1"}
    assert default.findtext("access_management") == "0"


def _login(value: str) -> str:
    credentials = _CREDENTIALS.match(value)
    return credentials["user"] if credentials else ""


def test_each_service_logs_in_as_its_own_clickhouse_user() -> None:
    logins = {
        name: _login(str(service["environment"]["SLUICE_CLICKHOUSE__URL"]))
        for name, service in SERVICES.items()
        if "SLUICE_CLICKHOUSE__URL" in (service.get("environment") or {})
    }
    assert logins == {"init": "sluice_admin", "sink": "sluice_sink", "cli": "sluice_reader"}
    exporter = yaml.safe_load(COLLECTOR.read_text())["exporters"]["clickhouse"]
    assert exporter["username"] == "sluice_otel"


def test_grafana_reads_clickhouse_as_the_reader() -> None:
    sources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    clickhouse = next(s for s in sources if s["type"] == "grafana-clickhouse-datasource")
    assert clickhouse["jsonData"]["username"] == "sluice_reader"
    variable = clickhouse["secureJsonData"]["password"].lstrip("$").strip("{}")
    assert variable == "CLICKHOUSE_READER_PASSWORD"
    assert _REQUIRED.match(SERVICES["grafana"]["environment"][variable])


def test_the_tenant_reader_pattern_filters_every_granted_table_on_tenant_id() -> None:
    lines = TENANT_READER.read_text().splitlines()
    text = " ".join(line for line in lines if not line.lstrip().startswith("--")).upper()
    assert "CREATE ROW POLICY" in text and "USING TENANT_ID =" in text
    assert "INSERT" not in text and "IDENTIFIED" not in text  # no password in the file
    granted = set(re.findall(r"GRANT SELECT ON SLUICE\.(\w+)", text))
    policy = text.split("CREATE ROW POLICY", 1)[1].split("USING", 1)[0]
    assert granted and granted == set(re.findall(r"SLUICE\.(\w+)", policy))


def test_env_example_lists_every_required_variable_without_a_value() -> None:
    text = (PROJECT_ROOT / "docker-compose.yml").read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    lines = (PROJECT_ROOT / ".env.example").read_text().splitlines()
    assignments = dict(
        line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")
    )
    assert set(assignments) == required
    assert not any(assignments.values()), "the example must hold no value"


def test_prometheus_meets_each_processor_on_one_network() -> None:
    # DNS discovery on two shared networks could return two addresses per replica, and
    # every replica's metrics would be scraped twice.
    for name in sorted(_file_targets()["prometheus"]):
        assert len(_networks(name) & _networks("prometheus")) == 1, name


class _StrictLoader(yaml.SafeLoader):
    """A loader that refuses a key twice in one mapping, as compose's parser does."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode)]
        repeated = {key for key in keys if keys.count(key) > 1}
        assert not repeated, f"line {node.start_mark.line + 1}: {repeated} twice"
        return super().construct_mapping(node, deep=deep)


def test_no_mapping_repeats_a_key() -> None:
    # PyYAML takes a repeated key (a second `<<:` merge, say); compose refuses the file.
    yaml.load((PROJECT_ROOT / "docker-compose.yml").read_text(), Loader=_StrictLoader)  # noqa: S506


# -- tenant identity ----------------------------------------------------------------------


#: guard and guard-stream (guard's second processor: it makes the same pseudonyms).
REGISTRY_HOLDERS = ("guard", "guard-stream")


#: Each file secret of compose and the only services it is given to.
SECRET_HOLDERS = {"sluice-tenants": set(REGISTRY_HOLDERS), "alert-webhook-url": {"alertmanager"}}


def _secret_sources(service: dict[str, Any]) -> set[str]:
    return {mounted["source"] for mounted in service.get("secrets") or []}


def test_every_file_secret_is_required_and_given_to_its_holders_only() -> None:
    assert set(COMPOSE["secrets"]) == set(SECRET_HOLDERS)
    for secret, holders in SECRET_HOLDERS.items():
        file = str(COMPOSE["secrets"][secret]["file"])
        assert _REQUIRED.match(file), f"the {secret} file has a default"
        given = {name for name, service in SERVICES.items() if secret in _secret_sources(service)}
        assert given == holders, secret


def test_guard_alone_gets_the_tenant_registry_as_a_required_file() -> None:
    for holder in REGISTRY_HOLDERS:
        [mounted] = SERVICES[holder]["secrets"]
        assert mounted["source"] == "sluice-tenants"
        path = SERVICES[holder]["environment"]["SLUICE_GUARD__TENANTS_PATH"]
        assert path == f"/run/secrets/{mounted['target']}"
    for name, service in SERVICES.items():
        if name not in REGISTRY_HOLDERS:
            assert "sluice-tenants" not in _secret_sources(service), name
            assert "SLUICE_GUARD__TENANTS_PATH" not in (service.get("environment") or {})
    # Producers hold tenants' private keys; no service of the platform does.
    for name, service in SERVICES.items():
        assert "SLUICE_TENANT__SIGNING_KEY" not in (service.get("environment") or {}), name


def test_env_example_documents_the_tenant_registry() -> None:
    example = (PROJECT_ROOT / ".env.example").read_text()
    assert re.search(r"^SLUICE_TENANTS_FILE=$", example, re.MULTILINE)
    assert "pseudonym_key_id" in example


def test_only_meter_holds_the_budget_signing_key_and_guard_its_public_key() -> None:
    """A service that held meter's private key could sign a budget that lifts a block."""
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        assert ("SLUICE_METER__BUDGET_SIGNING_KEY" in env) == (name == "meter"), name
        assert ("SLUICE_GUARD__BUDGET_PUBLIC_KEYS" in env) == (name == "guard"), name
        assert not any("BUDGET_SIGNING" in str(v) for v in env.values()) or name == "meter", name
    meter = SERVICES["meter"]["environment"]["SLUICE_METER__BUDGET_SIGNING_KEY"]
    guard = SERVICES["guard"]["environment"]["SLUICE_GUARD__BUDGET_PUBLIC_KEYS"]
    assert _REQUIRED.match(meter), "required: compose refuses to start meter without it"
    assert re.fullmatch(r"""\["\$\{SLUICE_BUDGET_PUBLIC_KEY:\?[^}]+\}"\]""", guard), guard
    # meter keeps the settings every processor shares (its merge is not replaced).
    assert "SLUICE_KAFKA__BOOTSTRAP_SERVERS" in SERVICES["meter"]["environment"]


# -- Kafka: TLS, SCRAM, ACLs ------------------------------------------------------------

BROKER_PROPERTIES = PROJECT_ROOT / "infra" / "docker" / "kafka" / "server.properties"
#: Services that act as the operator (a super user); every other client has its own principal.
OPERATOR_SERVICES = {"init", "cli"}


def _broker_properties() -> dict[str, str]:
    lines = BROKER_PROPERTIES.read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def _kafka_clients() -> dict[str, dict[str, Any]]:
    """Services configured as Sluice Kafka clients (they name the bootstrap servers)."""
    return {
        name: service
        for name, service in SERVICES.items()
        if "SLUICE_KAFKA__BOOTSTRAP_SERVERS" in (service.get("environment") or {})
    }


def test_the_broker_has_no_plaintext_listener() -> None:
    props = _broker_properties()
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    listeners = [item.split("://")[0] for item in props["listeners"].split(",")]
    assert {protocols[name] for name in listeners} == {"SASL_SSL", "SSL"}
    assert protocols[props["controller.listener.names"]] == "SSL"
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert "PLAINTEXT" not in BROKER_PROPERTIES.read_text().replace("No PLAINTEXT", "")
    assert "KAFKA_LISTENERS" not in SERVICES["kafka"].get("environment", {})


def test_the_broker_authenticates_with_scram_and_authorizes_with_acls() -> None:
    props = _broker_properties()
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:sluice-broker;User:sluice-operator"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert (
        '"@BROKER_PASSWORD@"' in props["listener.name.internal.scram-sha-512.sasl.jaas.config"]
    ), "the password comes from the environment, never from the file"


def test_every_kafka_client_logs_in_as_its_own_principal_over_tls() -> None:
    from streams.stack.kafka_security import COMPONENT_PRINCIPALS, OPERATOR

    clients = _kafka_clients()
    assert set(COMPONENT_PRINCIPALS) | OPERATOR_SERVICES <= set(clients)
    for name, service in clients.items():
        env = service["environment"]
        options = json.loads(env["SLUICE_KAFKA__OPTIONS"])
        # A lane's service (infer-embeddings) logs in as its processor (service["command"]).
        runs = service["command"][1] if service.get("command", [None])[0] == "run" else name
        expected = OPERATOR if name in OPERATOR_SERVICES else COMPONENT_PRINCIPALS[runs]
        assert options["security.protocol"] == "SASL_SSL", name
        assert options["sasl.mechanisms"] == "SCRAM-SHA-512", name
        assert options["sasl.username"] == expected, name
        assert options["ssl.ca.location"] == "/etc/sluice/kafka/ca.pem", name
        variable = f"SLUICE_KAFKA_{expected.removeprefix('sluice-').upper()}_PASSWORD"
        assert env["SLUICE_KAFKA__SASL_PASSWORD"].startswith("${" + variable + ":?"), name
        mounts = [str(v) for v in service.get("volumes", [])]
        assert any(v.endswith("/ca.pem:/etc/sluice/kafka/ca.pem:ro") for v in mounts), name


def test_connect_and_the_registry_log_in_over_tls() -> None:
    connect = SERVICES["connect"]["environment"]
    for prefix in ("CONNECT_", "CONNECT_PRODUCER_", "CONNECT_CONSUMER_", "CONNECT_ADMIN_"):
        assert connect[f"{prefix}SECURITY_PROTOCOL"] == "SASL_SSL", prefix
        assert 'username="sluice-connect"' in connect[f"{prefix}SASL_JAAS_CONFIG"], prefix
        assert "${SLUICE_KAFKA_CONNECT_PASSWORD:?" in connect[f"{prefix}SASL_JAAS_CONFIG"]
    registry = SERVICES["schema-registry"]["environment"]
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert 'username="sluice-registry"' in registry["SCHEMA_REGISTRY_KAFKASTORE_SASL_JAAS_CONFIG"]


def test_no_service_reaches_kafka_before_its_credentials_exist() -> None:
    for name in ("schema-registry", "connect", "init"):
        assert "kafka-users" in SERVICES[name]["depends_on"], name


def test_init_applies_the_declared_acls_before_any_processor_starts() -> None:
    """Without the grants of schemas/acls.yaml the authorizer denies every processor."""
    entrypoint = " ".join(SERVICES["init"]["entrypoint"])
    assert "sluice schemas apply" in entrypoint or "sluice acl apply" in entrypoint
    assert "--no-acls" not in entrypoint
    from streams.stack.kafka_security import COMPONENT_PRINCIPALS

    for name in COMPONENT_PRINCIPALS:
        assert SERVICES[name]["depends_on"]["init"] == {
            "condition": "service_completed_successfully"
        }, name
    dockerfile = (PROJECT_ROOT / "infra" / "docker" / "sluice.Dockerfile").read_text()
    assert "COPY schemas schemas" in dockerfile, "the image ships schemas/acls.yaml"


def test_connect_starts_once_its_acls_exist_and_the_registry_is_granted_before_init() -> None:
    # Connect's grants come from schemas/acls.yaml, which init applies.
    assert SERVICES["connect"]["depends_on"]["init"] == {
        "condition": "service_completed_successfully"
    }
    # The registry must serve init, so kafka-users grants its topic and groups itself.
    users = (PROJECT_ROOT / "infra" / "docker" / "kafka" / "users.sh").read_text()
    assert "--allow-principal User:sluice-registry --topic _schemas" in users
    assert "--group schema-registry" in users
    assert "schema-registry" not in SERVICES["init"]["depends_on"] or (
        SERVICES["schema-registry"]["depends_on"].keys() == {"kafka-users"}
    ), "the registry must not wait for init, which needs it"


def test_kafka_users_stores_the_credential_of_every_components_principal() -> None:
    """A principal whose SCRAM credential is never stored cannot log in at all."""
    from streams.stack.kafka_security import COMPONENT_PRINCIPALS, CONNECT

    users = (PROJECT_ROOT / "infra" / "docker" / "kafka" / "users.sh").read_text()
    loop = re.search(r"^for principal in ([\w ]+); do$", users, re.MULTILINE)
    assert loop is not None
    stored = {f"sluice-{name}" for name in loop.group(1).split()}
    assert {*COMPONENT_PRINCIPALS.values(), CONNECT, "sluice-registry"} == stored
    env = SERVICES["kafka-users"]["environment"]
    for principal in stored:
        short = principal.removeprefix("sluice-").upper()
        assert env[f"KAFKA_{short}_PASSWORD"].startswith(f"${{SLUICE_KAFKA_{short}_PASSWORD:?")


# -- alerting -------------------------------------------------------------------------------

ALERTMANAGER = PROJECT_ROOT / "infra" / "alertmanager" / "alertmanager.yml"


def test_alertmanager_reads_its_webhook_url_from_the_mounted_secret() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    [mounted] = SERVICES["alertmanager"]["secrets"]
    webhooks = [hook for r in config["receivers"] for hook in r.get("webhook_configs", [])]
    assert webhooks
    for hook in webhooks:
        assert "url" not in hook, "the webhook URL is a secret: url_file, not url"
        assert hook["url_file"] == f"/run/secrets/{mounted['target']}"


def test_alertmanager_routes_each_severity_of_the_rules() -> None:
    config = yaml.safe_load(ALERTMANAGER.read_text())
    routed = {
        matcher.split("=", 1)[1].strip('"')
        for route in config["route"]["routes"]
        for matcher in route["matchers"]
        if matcher.startswith("severity=")
    }
    rule_files = sorted((PROJECT_ROOT / "infra" / "prometheus" / "rules").glob("*.rules.yml"))
    groups = [g for path in rule_files for g in yaml.safe_load(path.read_text())["groups"]]
    severities = {r["labels"]["severity"] for g in groups for r in g["rules"] if "alert" in r}
    assert severities == routed == {"page", "ticket"}
    receivers = {r["name"] for r in config["receivers"]}
    assert all(route["receiver"] in receivers for route in config["route"]["routes"])


def test_prometheus_loads_the_mounted_rules_and_alerts_alertmanager() -> None:
    prometheus = yaml.safe_load(PROMETHEUS.read_text())
    assert prometheus["rule_files"] == ["rules/*.rules.yml"]  # beside prometheus.yml
    mounts = [str(v) for v in SERVICES["prometheus"]["volumes"]]
    assert "./infra/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./infra/prometheus/rules:/etc/prometheus/rules:ro" in mounts
    [target] = prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert target == "alertmanager:9093"
    assert _networks("prometheus") & _networks("alertmanager")
