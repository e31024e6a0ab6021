"""meter's Kafka connection: librdkafka's security options mapped onto faust and aiokafka."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

faust = pytest.importorskip("faust")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth  # noqa: E402

from processors.meter import connection  # noqa: E402
from processors.meter.connection import faust_broker_options  # noqa: E402
from streams.errors import ConfigurationError  # noqa: E402
from streams.settings import KafkaSettings  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mapping the settings must never reach a broker."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("meter's connection settings opened a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=subject == issuer, path_length=None), critical=True)
        .sign(signer, hashes.SHA256())
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """A throwaway CA, and a client certificate it signed (key encrypted with 'kpass')."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("sluice-test-ca", ca_key, "sluice-test-ca", ca_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate("meter", client_key, "sluice-test-ca", ca_key)
    paths = {
        "ca": tmp_path / "ca.pem",
        "cert": tmp_path / "client.pem",
        "key": tmp_path / "client.key",
        "other_key": tmp_path / "other.key",
    }
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        client_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"kpass"),
        )
    )
    paths["other_key"].write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


def _ca_subjects(context: ssl.SSLContext) -> list[Any]:
    return [cert["subject"] for cert in context.get_ca_certs()]


def test_plaintext_is_the_broker_url_alone() -> None:
    assert faust_broker_options(KafkaSettings()) == {"broker": "kafka://127.0.0.1:9092"}
    options = faust_broker_options(
        KafkaSettings(
            bootstrap_servers="k1:9092, k2:9092",
            # Tuning options do not apply to faust's clients; they are not an error.
            options={"security.protocol": "plaintext", "linger.ms": "5", "client.id": "x"},
        )
    )
    assert options == {"broker": "kafka://k1:9092,k2:9092"}
    # The app gets the same broker list, and no credentials.
    app = faust.App("meter-test", **options)
    assert [str(url) for url in app.conf.broker] == ["kafka://k1:9092", "kafka://k2:9092"]
    assert app.conf.broker_credentials is None


def test_a_protocol_prefix_on_a_bootstrap_server_is_dropped() -> None:
    settings = KafkaSettings(bootstrap_servers="SASL_SSL://k1:9093,k2:9093")
    assert connection.broker_url(settings.bootstrap_servers) == "kafka://k1:9093,k2:9093"


def test_sasl_ssl_with_scram_and_a_ca_file(pki: dict[str, Path]) -> None:
    settings = KafkaSettings(
        bootstrap_servers="broker.example:9093",
        options={
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "meter",
            "ssl.ca.location": str(pki["ca"]),
        },
        sasl_password=SecretStr("s3cret"),
    )
    options = faust_broker_options(settings)
    assert options["broker"] == "kafka://broker.example:9093"
    credentials = options["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password) == ("meter", "s3cret")
    assert "s3cret" not in repr(credentials)
    context = credentials.ssl_context
    assert context is not None
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert _ca_subjects(context) == [((("commonName", "sluice-test-ca"),),)]
    # What faust hands aiokafka's consumer, producer and admin client.
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "meter"
    assert auth["sasl_plain_password"] == "s3cret"
    assert auth["ssl_context"] is context
    assert faust.App("meter-test", **options).conf.broker_credentials is credentials


def test_sasl_plaintext_has_no_ssl_context() -> None:
    settings = KafkaSettings(
        options={
            "security.protocol": "sasl_plaintext",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "meter",
            "sasl.password": "pw",
            "ssl.ca.location": "/nowhere/ca.pem",  # ignored without SSL, as by librdkafka
        }
    )
    credentials = faust_broker_options(settings)["broker_credentials"]
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == "PLAIN"
    assert auth["ssl_context"] is None


def test_ssl_with_a_client_certificate(pki: dict[str, Path]) -> None:
    settings = KafkaSettings(
        options={
            "security.protocol": "SSL",
            "ssl.ca.location": str(pki["ca"]),
            "ssl.certificate.location": str(pki["cert"]),
            "ssl.key.location": str(pki["key"]),
            "ssl.key.password": "kpass",
        }
    )
    credentials = faust_broker_options(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SSLCredentials)
    assert _ca_subjects(credentials.context) == [((("commonName", "sluice-test-ca"),),)]
    auth = credentials_to_aiokafka_auth(credentials)
    assert auth == {"security_protocol": "SSL", "ssl_context": credentials.context}


@pytest.mark.parametrize(
    ("key", "password", "message"),
    [("key", "wrong", "client certificate"), ("other_key", None, "client certificate")],
)
def test_a_client_key_that_does_not_load_is_a_configuration_error(
    pki: dict[str, Path], key: str, password: str | None, message: str
) -> None:
    options = {
        "security.protocol": "SSL",
        "ssl.certificate.location": str(pki["cert"]),
        "ssl.key.location": str(pki[key]),
    }
    if password is not None:
        options["ssl.key.password"] = password
    with pytest.raises(ConfigurationError, match=message):
        faust_broker_options(KafkaSettings(options=options))


def test_verification_can_be_relaxed_as_in_librdkafka() -> None:
    context = connection.ssl_context({"ssl.endpoint.identification.algorithm": "none"})
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_REQUIRED)
    context = connection.ssl_context({"enable.ssl.certificate.verification": "false"})
    assert (context.check_hostname, context.verify_mode) == (False, ssl.CERT_NONE)


def test_gssapi_maps_to_kerberos_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = KafkaSettings(
        options={"security.protocol": "SASL_PLAINTEXT", "sasl.kerberos.service.name": "kfk"}
    )
    monkeypatch.setattr(connection, "_has_gssapi", lambda: True)
    credentials = faust_broker_options(settings)["broker_credentials"]  # GSSAPI by default
    assert isinstance(credentials, faust.GSSAPICredentials)
    assert credentials.kerberos_service_name == "kfk"
    monkeypatch.setattr(connection, "_has_gssapi", lambda: False)
    with pytest.raises(ConfigurationError, match="gssapi package"):
        faust_broker_options(settings)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"}, "ssl.keystore.location"),
        ({"sasl.oauthbearer.method": "oidc"}, "sasl.oauthbearer.method"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"}, "OAUTHBEARER"),
        ({"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}, "sasl.username"),
        ({"security.protocol": "TLS"}, "security.protocol"),
        ({"security.protocol": "SSL", "ssl.ca.location": "/nowhere/ca.pem"}, "Kafka CA"),
        ({"security.protocol": "SSL", "ssl.key.location": "/k.pem"}, "ssl.certificate.location"),
        (
            {"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "x"},
            "identification",
        ),
    ],
)
def test_an_option_meter_cannot_honour_is_a_configuration_error(
    options: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        faust_broker_options(KafkaSettings(options=options))
