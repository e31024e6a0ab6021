"""The local broker's credentials: made once, owner-only, and handed to each client."""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from processors.meter.connection import faust_broker_options
from streams.contracts.acls import load_acls
from streams.contracts.catalog import load_catalog
from streams.runtime.tenants import TenantRegistryError
from streams.settings import PROJECT_ROOT, KafkaSettings, Settings
from streams.stack import kafka_security as ks
from streams.stack import local_processor_environment
from streams.stack.components import ComponentError, Kafka
from streams.stack.tenant_keys import configured_tenants, ensure_tenants


def settings_in(tmp_path: Path, **stack: object) -> Settings:
    return Settings.model_validate({"stack": {"state_dir": tmp_path, **stack}})


@pytest.fixture
def made(tmp_path: Path) -> Settings:
    """A state directory in which `sluice up` made the credentials."""
    ks.ensure_kafka_secrets(settings_in(tmp_path))
    return settings_in(tmp_path)  # read again: the settings pick the credentials up


def _certificates(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_every_file_is_made_once_owner_only(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    made = ks.ensure_kafka_secrets(settings)
    assert {"ca-key.pem", "ca.pem", "broker.pem"} <= set(made)
    assert {f"passwords/{p}" for p in ks.PRINCIPALS} <= set(made)
    folder = ks.secrets_dir(settings)
    for path in [folder, folder / "passwords"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 3 + len(ks.PRINCIPALS)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    before = {p: p.read_bytes() for p in files}
    assert ks.ensure_kafka_secrets(settings) == [], "a second `sluice up` makes nothing"
    assert {p: p.read_bytes() for p in files} == before


def test_each_principal_has_its_own_random_password(made: Settings) -> None:
    passwords = {ks.password(made, p) for p in ks.PRINCIPALS}
    assert len(passwords) == len(ks.PRINCIPALS)
    assert all(len(p) >= 40 for p in passwords)
    assert set(ks.PROCESSOR_PRINCIPALS) == {"validate", "guard", "infer", "meter", "sink", "drift"}
    assert ks.SERVICE_PRINCIPALS == {"gateway": "sluice-gateway"}
    assert set(ks.COMPONENT_PRINCIPALS.values()) <= set(ks.PRINCIPALS)
    assert ks.BROKER in ks.PRINCIPALS and ks.OPERATOR in ks.PRINCIPALS
    with pytest.raises(ValueError, match="not a principal"):
        ks.password(made, "sluice-nobody")


def test_the_ca_signs_the_brokers_certificate_for_its_addresses(made: Settings) -> None:
    (ca,) = _certificates(ks.ca_path(made))
    broker, chained_ca = _certificates(ks.broker_keystore_path(made))
    assert chained_ca == ca, "the key store carries the chain up to the CA"
    assert broker.issuer == ca.subject
    ca_key = ca.public_key()
    assert isinstance(ca_key, ec.EllipticCurvePublicKey)
    assert broker.signature_hash_algorithm is not None
    ca_key.verify(  # raises when the CA did not sign it
        broker.signature, broker.tbs_certificate_bytes, ec.ECDSA(broker.signature_hash_algorithm)
    )
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert broker.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    names = broker.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    common_name = broker.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == ks.BROKER, "the controller maps CN=sluice-broker to User:sluice-broker"
    usages = broker.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(usages)
    key_pem = ks.broker_keystore_path(made).read_text()
    assert key_pem.startswith("-----BEGIN PRIVATE KEY-----"), "PKCS#8, what Kafka's PEM store reads"


def test_a_lost_broker_key_store_is_issued_again_by_the_same_ca(made: Settings) -> None:
    old_broker = _certificates(ks.broker_keystore_path(made))[0]
    ks.broker_keystore_path(made).unlink()
    assert ks.ensure_kafka_secrets(made) == ["broker.pem"]
    new_broker, ca = _certificates(ks.broker_keystore_path(made))
    assert new_broker != old_broker
    assert ca == _certificates(ks.ca_path(made))[0]
    assert new_broker.fingerprint(hashes.SHA256()) != old_broker.fingerprint(hashes.SHA256())


def test_client_environment_logs_in_with_scram_over_tls(made: Settings) -> None:
    env = ks.client_environment(made, "sluice-validate")
    options = json.loads(env["SLUICE_KAFKA__OPTIONS"])
    assert options == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": "sluice-validate",
        "ssl.ca.location": str(ks.ca_path(made)),
    }
    assert env["SLUICE_KAFKA__SASL_PASSWORD"] == ks.password(made, "sluice-validate")
    assert ks.password(made, "sluice-validate") not in env["SLUICE_KAFKA__OPTIONS"]


def test_without_credentials_the_message_says_to_run_sluice_up(tmp_path: Path) -> None:
    with pytest.raises(ks.KafkaSecretsError, match="sluice up"):
        ks.client_environment(settings_in(tmp_path), ks.OPERATOR)


def test_clients_of_the_local_stack_act_as_the_operator(
    made: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    kafka = made.kafka
    assert kafka.options["sasl.username"] == ks.OPERATOR
    assert kafka.sasl_password is not None
    assert kafka.sasl_password.get_secret_value() == ks.password(made, ks.OPERATOR)
    assert kafka.client_config()["security.protocol"] == "SASL_SSL"
    assert ks.password(made, ks.OPERATOR) not in repr(made)


def test_explicit_kafka_settings_always_win(made: Settings) -> None:
    root = made.stack.state_dir
    remote = Settings.model_validate(
        {"stack": {"state_dir": root}, "kafka": {"bootstrap_servers": "kafka.example:9093"}}
    )
    assert remote.kafka.options == {} and remote.kafka.sasl_password is None
    own_protocol = Settings.model_validate(
        {"stack": {"state_dir": root}, "kafka": {"options": {"security.protocol": "SSL"}}}
    )
    assert own_protocol.kafka.options == {"security.protocol": "SSL"}
    own_password = Settings.model_validate(
        {"stack": {"state_dir": root}, "kafka": {"sasl_password": "mine"}}
    )
    assert own_password.kafka.options == {}
    tuned = Settings.model_validate(
        {"stack": {"state_dir": root}, "kafka": {"options": {"client.id": "me"}}}
    )
    assert tuned.kafka.options["client.id"] == "me", "other options are kept"
    assert tuned.kafka.options["sasl.username"] == ks.OPERATOR


def test_each_processor_and_the_gateway_log_in_as_their_own_principals_by_default(
    made: Settings,
) -> None:
    assert "gateway" in ks.COMPONENT_PRINCIPALS
    for processor, principal in ks.COMPONENT_PRINCIPALS.items():
        env = local_processor_environment(made, processor)
        assert json.loads(env["SLUICE_KAFKA__OPTIONS"])["sasl.username"] == principal
        assert env["SLUICE_KAFKA__SASL_PASSWORD"] == ks.password(made, principal)
    assert ks.local_principal(made, "connect") == ks.CONNECT


def test_processors_act_as_the_operator_when_their_principals_are_switched_off(
    made: Settings,
) -> None:
    shared = settings_in(made.stack.state_dir, processor_principals=False)
    for processor in ks.COMPONENT_PRINCIPALS:
        env = local_processor_environment(shared, processor)
        assert json.loads(env["SLUICE_KAFKA__OPTIONS"])["sasl.username"] == ks.OPERATOR
        assert env["SLUICE_KAFKA__SASL_PASSWORD"] == ks.password(made, ks.OPERATOR)
    assert ks.local_principal(shared, "connect") == ks.OPERATOR


def test_the_cli_acts_as_the_operator_whatever_the_processors_do(made: Settings) -> None:
    """`sluice` commands other than `run` (schemas, acl, dlq, demo...) read these settings."""
    assert made.stack.processor_principals
    assert made.kafka.options["sasl.username"] == ks.OPERATOR
    assert ks.local_principal(made, "") == ks.OPERATOR
    assert ks.local_principal(made, "not-a-processor") == ks.OPERATOR


def test_processors_of_another_cluster_get_no_local_credentials(made: Settings) -> None:
    remote = Settings.model_validate(
        {"stack": {"state_dir": made.stack.state_dir}, "kafka": {"bootstrap_servers": "k:9092"}}
    )
    assert "SLUICE_KAFKA__OPTIONS" not in local_processor_environment(remote, "validate")


def _server_properties(settings: Settings) -> dict[str, str]:
    kafka = Kafka(settings)
    kafka.data_dir.mkdir(parents=True)
    (kafka.data_dir / "meta.properties").write_text("formatted\n")
    kafka.security_marker.write_text(kafka._security_fingerprint() + "\n")
    kafka.prepare()  # formatted already: renders, checks, does not run Java
    path = kafka.config_dir / "server.properties"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "it holds the broker's password"
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs if not k.startswith("#")}


def test_the_broker_has_no_plaintext_listener_and_an_authorizer(made: Settings) -> None:
    props = _server_properties(made)
    port, controller = made.stack.kafka_port, made.stack.kafka_controller_port
    assert props["listeners"] == f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}"
    assert "PLAINTEXT" not in props["listeners"] + props["advertised.listeners"]
    protocols = dict(p.split(":") for p in props["listener.security.protocol.map"].split(","))
    assert protocols == {"SASL_SSL": "SASL_SSL", "CONTROLLER": "SSL"}
    assert props["listener.name.controller.ssl.client.auth"] == "required"
    assert props["ssl.principal.mapping.rules"].startswith("RULE:^CN=([^,]+).*$/$1/")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["inter.broker.listener.name"] == "SASL_SSL"
    assert props["ssl.keystore.type"] == props["ssl.truststore.type"] == "PEM"
    assert props["ssl.keystore.location"] == str(ks.broker_keystore_path(made))
    assert props["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["super.users"] == "User:sluice-broker;User:sluice-operator"
    jaas = props["listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config"]
    assert 'username="sluice-broker"' in jaas
    assert ks.password(made, ks.BROKER) in jaas


def test_data_formatted_before_security_is_refused_with_what_to_do(made: Settings) -> None:
    kafka = Kafka(made)
    kafka.data_dir.mkdir(parents=True)
    (kafka.data_dir / "meta.properties").write_text("formatted\n")
    with pytest.raises(ComponentError, match=r"without TLS.*sluice down --purge"):
        kafka.prepare()
    kafka.security_marker.write_text("SASL_SSL SCRAM-SHA-512 ca-sha256=0000\n")
    with pytest.raises(ComponentError, match=r"other than those in .*sluice down --purge"):
        kafka.prepare()


def test_meter_trusts_the_local_broker_certificate_over_tls(made: Settings) -> None:
    """A real TLS handshake: the generated certificate passes the checks meter's client makes."""
    env = ks.client_environment(made, "sluice-meter")
    kafka = KafkaSettings(
        bootstrap_servers="127.0.0.1:9092",
        options=json.loads(env["SLUICE_KAFKA__OPTIONS"]),
        sasl_password=env["SLUICE_KAFKA__SASL_PASSWORD"],
    )
    credentials = faust_broker_options(kafka)["broker_credentials"]
    assert credentials.mechanism.value == "SCRAM-SHA-512"
    assert credentials.username == "sluice-meter"
    client = credentials.ssl_context
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED

    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(ks.broker_keystore_path(made))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            connection, _ = listener.accept()
            with server.wrap_socket(connection, server_side=True):
                pass

        thread = threading.Thread(target=accept)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.getpeercert()["subject"] == ((("commonName", "sluice-broker"),),)
        thread.join(5)


def _tls_server(made: Settings) -> tuple[int, list[str]]:
    """A TLS server with the broker's key store; it records each handshake's outcome."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(ks.broker_keystore_path(made))
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    outcomes: list[str] = []

    def accept() -> None:
        with listener:
            while not outcomes:
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    return
                try:
                    with server.wrap_socket(connection, server_side=True) as tls:
                        outcomes.append(str(tls.version()))
                except (ssl.SSLError, OSError) as exc:
                    outcomes.append(type(exc).__name__)

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1], outcomes


@pytest.mark.parametrize("trusts_the_ca", [True, False])
def test_librdkafka_verifies_the_broker_certificate_for_its_address(
    made: Settings, trusts_the_ca: bool
) -> None:
    """In TLS 1.3 the server's handshake completes only once the client accepted its
    certificate: librdkafka (hostname check on 127.0.0.1 included) accepts it with the
    local CA, and refuses it without."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    port, outcomes = _tls_server(made)
    conf = {**ks.client_options(made, ks.OPERATOR), "bootstrap.servers": f"127.0.0.1:{port}"}
    if not trusts_the_ca:
        del conf["ssl.ca.location"]
    client = AdminClient({**conf, "log_level": 0})
    with pytest.raises(KafkaException):  # no broker behind the TLS
        client.list_topics(timeout=3)
    assert outcomes, "librdkafka never connected"
    assert (outcomes[0] == "TLSv1.3") is trusts_the_ca, outcomes


# -- tenants' principals --------------------------------------------------------------


def test_each_registered_tenant_gets_a_password_of_its_own(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    ensure_tenants(settings, ["acme", "globex"])
    made = ks.ensure_kafka_secrets(settings)
    assert {"passwords/tenant-acme", "passwords/tenant-globex"} <= set(made)
    assert ks.local_principals(settings) == (*ks.PRINCIPALS, "tenant-acme", "tenant-globex")
    passwords = {ks.password(settings, p) for p in ks.local_principals(settings)}
    assert len(passwords) == len(ks.PRINCIPALS) + 2
    env = ks.client_environment(settings_in(tmp_path), "tenant-acme")
    assert json.loads(env["SLUICE_KAFKA__OPTIONS"])["sasl.username"] == "tenant-acme"
    assert env["SLUICE_KAFKA__SASL_PASSWORD"] == ks.password(settings, "tenant-acme")
    # A tenant registered later gets its password at the next `sluice up`, the others stay.
    ensure_tenants(settings, ["hooli"])
    assert ks.ensure_kafka_secrets(settings) == ["passwords/tenant-hooli"]


def test_a_tenant_principal_names_a_valid_tenant_id(made: Settings) -> None:
    for name in ("tenant-", "tenant-../ca-key.pem", "tenant-a/b"):
        with pytest.raises(ValueError, match="not a principal"):
            ks.password_path(made, name)
    with pytest.raises(TenantRegistryError):
        ks.tenant_principal("../x")


def test_the_acl_tenants_are_the_tenants_sluice_up_registers(tmp_path: Path) -> None:
    """Every tenant `sluice up` registers can write its topics, and no other is granted."""
    acls = yaml.safe_load((PROJECT_ROOT / "schemas" / "acls.yaml").read_text())
    assert sorted(acls["tenants"]) == configured_tenants(settings_in(tmp_path))
    declaration = load_acls(PROJECT_ROOT / "schemas", load_catalog(PROJECT_ROOT / "schemas"))
    assert declaration.tenant_template == ks.TENANT_PRINCIPAL_PREFIX + "{tenant}"
    for tenant in acls["tenants"]:
        assert ks.tenant_principal(tenant) in declaration.principals
