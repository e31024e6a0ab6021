"""Credentials of the local broker: a CA, the broker's TLS certificate, one password per principal.

``sluice up`` makes them once under ``<state dir>/secrets/kafka/`` (the folder 0700,
every file 0600, each written with ``O_EXCL`` so two ``up`` at once cannot make two):

* ``ca-key.pem`` / ``ca.pem``: a local certificate authority; clients trust ``ca.pem``;
* ``broker.pem``: the broker's private key, its certificate (SAN ``127.0.0.1`` and
  ``localhost``, CN ``sluice-broker``) and the CA, the PEM key store Kafka reads;
* ``passwords/<principal>``: a random SCRAM-SHA-512 password per principal.

Each Sluice component authenticates as its own principal (``COMPONENT_PRINCIPALS``:
the processors and the gateway; ``CONNECT``); the ``sluice`` CLI, the demo's own
clients and the tests act as ``OPERATOR``. Each tenant of the local tenant registry
(``streams.stack.tenant_keys``) gets a principal ``tenant-<id>`` too, the name
schemas/acls.yaml grants a tenant's producers their topics under. Production keeps all
this in its secret store; nothing here is used outside the local stack.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr

from streams.errors import SluiceError
from streams.runtime.java_kafka import jaas_config, java_security_properties
from streams.runtime.tenants import TENANT_ID, check_tenant_id
from streams.settings import (
    LOCAL_KAFKA_CA,
    LOCAL_KAFKA_MECHANISM,
    LOCAL_KAFKA_OPERATOR,
    LOCAL_KAFKA_PASSWORDS,
    LOCAL_KAFKA_SECRETS,
    KafkaSettings,
    Settings,
    local_kafka_client,
)
from streams.stack.secrets import write_once
from streams.stack.tenant_keys import local_registry

#: The broker itself: inter-broker SCRAM user, and the CN of its certificate (controller mTLS).
BROKER = "sluice-broker"
#: The ``sluice`` CLI, the demo and the tests' own clients: a super user.
OPERATOR = LOCAL_KAFKA_OPERATOR
#: The Kafka Connect worker and the clients it opens for its connectors.
CONNECT = "sluice-connect"
#: Each processor's own principal (the SCRAM user name it authenticates as).
PROCESSOR_PRINCIPALS: dict[str, str] = {
    "validate": "sluice-validate",
    "guard": "sluice-guard",
    "infer": "sluice-infer",
    "meter": "sluice-meter",
    "sink": "sluice-sink",
    "drift": "sluice-drift",
}
#: What ``sluice run`` starts besides the processors, each with its own principal: the
#: gateway produces tenants' signed requests and reads their outcomes.
SERVICE_PRINCIPALS: dict[str, str] = {"gateway": "sluice-gateway"}
#: Processors that log in as another's principal: guard-stream is guard's second processor
#: (the same policy, pseudonym keys and trust), granted in guard's entry of schemas/acls.yaml.
SHARED_PRINCIPALS: dict[str, str] = {"guard-stream": PROCESSOR_PRINCIPALS["guard"]}
#: Every component ``sluice run`` starts, and the principal it logs in as.
COMPONENT_PRINCIPALS: dict[str, str] = {
    **PROCESSOR_PRINCIPALS,
    **SHARED_PRINCIPALS,
    **SERVICE_PRINCIPALS,
}
#: Every principal ``sluice up`` makes a password for (each once).
PRINCIPALS: tuple[str, ...] = tuple(
    dict.fromkeys((BROKER, OPERATOR, *COMPONENT_PRINCIPALS.values(), CONNECT))
)
#: A tenant's principal: its producers' SCRAM user (``tenant-{tenant}`` in schemas/acls.yaml).
TENANT_PRINCIPAL_PREFIX = "tenant-"
#: Principals the broker is told about when its storage is formatted (it needs them to start).
BOOTSTRAP_PRINCIPALS: tuple[str, ...] = (BROKER, OPERATOR)
#: The only SASL mechanism the local broker enables.
MECHANISM = LOCAL_KAFKA_MECHANISM
#: PBKDF2 rounds of the stored SCRAM credentials (Kafka's minimum for SHA-512 is 4096).
SCRAM_ITERATIONS = 8192

CA_KEY_FILE = "ca-key.pem"
BROKER_KEYSTORE_FILE = "broker.pem"
#: The broker's certificate names: clients connect to 127.0.0.1 and verify it.
BROKER_HOSTS = ("127.0.0.1", "localhost")
_CA_DAYS = 3650
_BROKER_DAYS = 825


class KafkaSecretsError(SluiceError):
    """The local broker's credentials are missing or unusable; the message says what to do."""


def secrets_dir(settings: Settings) -> Path:
    """``<state dir>/secrets/kafka``: everything this module writes."""
    return settings.stack.root / LOCAL_KAFKA_SECRETS


def ca_path(settings: Settings) -> Path:
    """The local CA's certificate: what every client trusts."""
    return secrets_dir(settings) / LOCAL_KAFKA_CA


def broker_keystore_path(settings: Settings) -> Path:
    """The broker's PEM key store: its private key, certificate and the CA."""
    return secrets_dir(settings) / BROKER_KEYSTORE_FILE


def tenant_principal(tenant: str) -> str:
    """The principal of ``tenant``'s producers (``check_tenant_id`` keeps it a safe name)."""
    return TENANT_PRINCIPAL_PREFIX + check_tenant_id(tenant)


def local_principals(settings: Settings) -> tuple[str, ...]:
    """Every principal of the local stack: the fixed ones, then one per registered tenant."""
    tenants = sorted(local_registry(settings).tenants)
    return (*PRINCIPALS, *(tenant_principal(t) for t in tenants))


def password_path(settings: Settings, principal: str) -> Path:
    """Where the password of ``principal`` is kept."""
    tenant = principal.removeprefix(TENANT_PRINCIPAL_PREFIX)
    if principal not in PRINCIPALS and not (tenant != principal and TENANT_ID.fullmatch(tenant)):
        raise ValueError(f"{principal!r} is not a principal of the local stack")
    return secrets_dir(settings) / LOCAL_KAFKA_PASSWORDS / principal


def password(settings: Settings, principal: str) -> str:
    """The password of ``principal``; run ``sluice up`` first to make it."""
    path = password_path(settings, principal)
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError as exc:
        raise KafkaSecretsError(
            f"no Kafka password for {principal} in {path.parent}; run `sluice up` to make it"
        ) from exc


def ensure_kafka_secrets(settings: Settings) -> list[str]:
    """Make whatever is missing of the CA, the broker's key store and the passwords.

    A password for each principal of ``local_principals``: register tenants first, and
    a tenant registered later gets its password at the next ``sluice up``. Returns the
    names of the files made now (empty when everything existed). A broker key store
    lost on its own is issued again by the same CA, so clients keep trusting it.
    """
    folder = secrets_dir(settings)
    _private_dir(folder)
    _private_dir(folder / LOCAL_KAFKA_PASSWORDS)
    made = []
    if write_once(folder / CA_KEY_FILE, _pem_key(ec.generate_private_key(ec.SECP256R1()))):
        made.append(CA_KEY_FILE)
    ca_key = _load_key(folder / CA_KEY_FILE)
    if write_once(folder / LOCAL_KAFKA_CA, _pem_cert(_ca_certificate(ca_key))):
        made.append(LOCAL_KAFKA_CA)
    ca_cert = x509.load_pem_x509_certificate((folder / LOCAL_KAFKA_CA).read_bytes())
    if not broker_keystore_path(settings).exists():
        broker_key = ec.generate_private_key(ec.SECP256R1())
        certificate = _broker_certificate(broker_key, ca_key, ca_cert)
        keystore = _pem_key(broker_key) + _pem_cert(certificate) + _pem_cert(ca_cert)
        if write_once(broker_keystore_path(settings), keystore):
            made.append(BROKER_KEYSTORE_FILE)
    for principal in local_principals(settings):
        if write_once(password_path(settings, principal), secrets.token_urlsafe(32)):
            made.append(f"{LOCAL_KAFKA_PASSWORDS}/{principal}")
    return made


def client_options(settings: Settings, principal: str) -> dict[str, str]:
    """The librdkafka options, password included, of ``principal`` on the local broker."""
    local = local_kafka_client(settings.stack.root, principal)
    if local is None:
        raise KafkaSecretsError(
            f"no Kafka credentials for {principal} in {secrets_dir(settings)}; "
            "run `sluice up` to make them"
        )
    options, secret = local
    address = f"127.0.0.1:{settings.stack.kafka_port}"
    return {"bootstrap.servers": address, **options, "sasl.password": secret}


def client_environment(settings: Settings, principal: str) -> dict[str, str]:
    """``SLUICE_KAFKA__*`` variables that make a Sluice process connect as ``principal``."""
    options = client_options(settings, principal)
    secret = options.pop("sasl.password")
    options.pop("bootstrap.servers")
    return {
        "SLUICE_KAFKA__OPTIONS": json.dumps(options, sort_keys=True),
        "SLUICE_KAFKA__SASL_PASSWORD": secret,
    }


def local_principal(settings: Settings, component: str) -> str:
    """The principal ``component`` (a processor, the gateway or ``connect``) uses locally.

    Its own principal when ``SLUICE_STACK__PROCESSOR_PRINCIPALS`` is true, the default
    (the ACLs must grant it its topics); otherwise, and for anything that is not a
    processor, the gateway or the worker, the operator, which needs no ACL.
    """
    own = CONNECT if component == "connect" else COMPONENT_PRINCIPALS.get(component)
    if own is not None and settings.stack.processor_principals:
        return own
    return OPERATOR


def java_client_properties(settings: Settings, principal: str) -> dict[str, str]:
    """Java client properties (Kafka Connect) of ``principal``, its secret included."""
    options = client_options(settings, principal)
    secret = options.pop("sasl.password")
    del options["bootstrap.servers"]
    kafka = KafkaSettings(options=options, sasl_password=SecretStr(secret))
    return java_security_properties(kafka)


def broker_jaas_config(settings: Settings) -> str:
    """The broker's own SCRAM login (inter-broker), for server.properties."""
    return jaas_config(MECHANISM, BROKER, password(settings, BROKER))


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)  # mkdir's mode is masked by the umask, and an older folder may be wider


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KafkaSecretsError(f"{path} is not an EC private key; delete {path.parent} and rerun")
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    # PKCS#8: the only private key encoding Kafka's PEM key store reads.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def _pem_cert(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Sluice local stack CA")])
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _broker_certificate(
    key: ec.EllipticCurvePrivateKey, ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> x509.Certificate:
    names: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address(BROKER_HOSTS[0])),
        x509.DNSName(BROKER_HOSTS[1]),
    ]
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, BROKER)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=_BROKER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # Server for clients; client for the controller listener, which requires a certificate.
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def upsert_scram_credentials(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Set, as the operator, the SCRAM credential of every principal but the bootstrapped ones.

    The tenants' principals included, for each tenant that has a password file. Returns
    the principals set. Each gets a fresh salt; its password is the one in its file.
    """
    from confluent_kafka.admin import AdminClient  # noqa: PLC0415 (slow import)
    from confluent_kafka.admin._scram import (  # noqa: PLC0415 (re-exported without __all__)
        ScramCredentialInfo,
        ScramMechanism,
        UserScramCredentialAlteration,
        UserScramCredentialUpsertion,
    )

    principals = [
        p
        for p in local_principals(settings)
        if p not in BOOTSTRAP_PRINCIPALS
        and (p in PRINCIPALS or password_path(settings, p).is_file())
    ]
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upsertions: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(p, info, password(settings, p).encode("ascii"))
        for p in principals
    ]
    admin = AdminClient({**client_options(settings, OPERATOR), "log_level": 0})
    futures = admin.alter_user_scram_credentials(upsertions, request_timeout=timeout_s)
    for principal, future in futures.items():
        try:
            future.result(timeout=timeout_s)
        except Exception as exc:  # KafkaException; the message names no password
            raise KafkaSecretsError(
                f"could not set the SCRAM credential of {principal} on the local broker: {exc}"
            ) from exc
    return principals
