"""How meter's faust app reaches Kafka: the same cluster and security as every other client.

Every other Sluice client is a confluent-kafka (librdkafka) client configured
by ``KafkaSettings.client_config()``: ``SLUICE_KAFKA__BOOTSTRAP_SERVERS``, the
librdkafka options of ``SLUICE_KAFKA__OPTIONS`` and ``SLUICE_KAFKA__SASL_PASSWORD``.
meter runs on faust-streaming, whose clients are aiokafka's and take the same
settings in another shape: a broker URL and one ``broker_credentials`` object
(which faust hands to its consumer, its producer and the producer's admin
calls). ``faust_broker_options`` translates the one into the other, so a
cluster secured for the other processors is reachable by meter too.
"""

from __future__ import annotations

import importlib.util
import ssl
from pathlib import Path
from typing import Any

import faust
from faust.types.auth import CredentialsT

from streams.errors import ConfigurationError
from streams.settings import KafkaSettings

#: librdkafka's security protocols (``security.protocol``), case-insensitive there too.
PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
#: SASL mechanisms aiokafka speaks with a user name and password.
PASSWORD_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

#: The librdkafka security options meter honours (see ``faust_broker_options``).
HONOURED = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.key.location",
        "ssl.key.password",
        "ssl.cipher.suites",
        "ssl.endpoint.identification.algorithm",
        "enable.ssl.certificate.verification",
    }
)
#: Beginnings of the names of librdkafka's security options (besides ``security.protocol``).
_SECURITY_PREFIXES = ("ssl.", "ssl_", "sasl.", "https.")
_SECURITY_NAMES = ("security.protocol", "enable.ssl.certificate.verification")

_TRUE = ("true", "t", "1")
_FALSE = ("false", "f", "0")


def is_security_option(name: str) -> bool:
    """True for a librdkafka option about encryption or authentication."""
    return (
        name in _SECURITY_NAMES
        or name.startswith(_SECURITY_PREFIXES)
        or "oauthbearer" in name
        or name.startswith("enable.sasl.")
    )


def faust_broker_options(kafka: KafkaSettings) -> dict[str, Any]:
    """The faust app options (``broker``, ``broker_credentials``) for ``kafka``'s cluster.

    Honoured librdkafka options (from ``SLUICE_KAFKA__OPTIONS``, plus
    ``SLUICE_KAFKA__SASL_PASSWORD`` as ``sasl.password``):

    * ``bootstrap.servers`` → the ``kafka://`` broker URL (a ``PROTOCOL://``
      prefix on a server is dropped: the protocol comes from ``security.protocol``);
    * ``security.protocol`` ``plaintext`` | ``ssl`` | ``sasl_plaintext`` |
      ``sasl_ssl`` → no credentials | ``faust.SSLCredentials`` |
      ``faust.SASLCredentials`` / ``faust.GSSAPICredentials`` without, or with,
      an SSL context;
    * ``sasl.mechanism`` (or ``sasl.mechanisms``; librdkafka's default GSSAPI)
      ``PLAIN``, ``SCRAM-SHA-256``, ``SCRAM-SHA-512`` with ``sasl.username``
      and ``sasl.password`` → ``SASLCredentials``; ``GSSAPI`` with
      ``sasl.kerberos.service.name`` → ``GSSAPICredentials`` (aiokafka uses
      the process's Kerberos credential cache and needs the ``gssapi`` package);
    * ``ssl.ca.location`` (a file, a directory or ``probe``), ``ssl.ca.pem``,
      ``ssl.certificate.location``, ``ssl.key.location``, ``ssl.key.password``,
      ``ssl.cipher.suites``, ``ssl.endpoint.identification.algorithm``
      (``https`` | ``none``) and ``enable.ssl.certificate.verification`` → the
      ``ssl.SSLContext`` (system CAs when no CA is given, like librdkafka).

    Rejected with ``ConfigurationError``, rather than ignored: every other
    security option (``sasl.mechanism`` ``OAUTHBEARER`` and the
    ``sasl.oauthbearer.*`` options, ``sasl.kerberos.principal`` / ``.keytab`` /
    ``.kinit.cmd``, ``ssl.keystore.*``, ``ssl.certificate.pem``,
    ``ssl.key.pem``, ``ssl.crl.location``, ``ssl.engine.*``, ``ssl.providers``,
    ...), an unknown protocol or mechanism, a missing user name or password,
    and CA, certificate or key files that cannot be loaded. As in librdkafka,
    SSL options are used only under ``ssl``/``sasl_ssl`` and SASL options only
    under ``sasl_*``. librdkafka options that are not about security (tuning,
    ``client.id``, ``debug``, ...) do not apply to faust's clients, which keep
    their own defaults.

    Pure: reads the named files but opens no connection. For a plaintext
    cluster the result is just the broker URL.
    """
    conf = kafka.client_config()
    options = {name: str(value) for name, value in conf.items() if is_security_option(name)}
    rejected = sorted(set(options) - HONOURED)
    if rejected:
        raise ConfigurationError(
            f"meter cannot apply the Kafka option(s) {', '.join(rejected)} to its faust "
            "(aiokafka) clients; see processors/meter/connection.py for the supported ones"
        )
    result: dict[str, Any] = {"broker": broker_url(str(conf["bootstrap.servers"]))}
    credentials = _credentials(options)
    if credentials is not None:
        result["broker_credentials"] = credentials
    return result


def broker_url(bootstrap_servers: str) -> str:
    """The broker URL faust takes for librdkafka's ``bootstrap.servers`` (``kafka://a:1,b:1``)."""
    servers = [s.strip().rpartition("://")[2] for s in bootstrap_servers.split(",")]
    servers = [s for s in servers if s]
    if not servers:
        raise ConfigurationError(
            "SLUICE_KAFKA__BOOTSTRAP_SERVERS names no broker; set it to host:port[,host:port]"
        )
    return "kafka://" + ",".join(servers)


def _credentials(options: dict[str, str]) -> CredentialsT | None:
    protocol = options.get("security.protocol", "PLAINTEXT").upper()
    if protocol not in PROTOCOLS:
        raise ConfigurationError(
            f"security.protocol {options['security.protocol']!r} is none of "
            f"{', '.join(p.lower() for p in PROTOCOLS)}"
        )
    context = ssl_context(options) if protocol in ("SSL", "SASL_SSL") else None
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    mechanism = _mechanism(options)
    if mechanism == "GSSAPI":
        if not _has_gssapi():
            raise ConfigurationError(
                "sasl.mechanism GSSAPI needs the gssapi package in meter's environment"
            )
        return faust.GSSAPICredentials(
            kerberos_service_name=options.get("sasl.kerberos.service.name", "kafka"),
            ssl_context=context,
        )
    username, password = options.get("sasl.username"), options.get("sasl.password")
    if not username or password is None:
        raise ConfigurationError(
            f"sasl.mechanism {mechanism} needs sasl.username and sasl.password "
            "(SLUICE_KAFKA__SASL_PASSWORD)"
        )
    return faust.SASLCredentials(
        username=username, password=password, ssl_context=context, mechanism=mechanism
    )


def _mechanism(options: dict[str, str]) -> str:
    names = {
        options[key].strip().upper()
        for key in ("sasl.mechanism", "sasl.mechanisms")
        if key in options
    }
    if len(names) > 1:
        raise ConfigurationError(
            "sasl.mechanism and sasl.mechanisms disagree; set only one of them"
        )
    mechanism = names.pop() if names else "GSSAPI"  # librdkafka's default
    if mechanism not in (*PASSWORD_MECHANISMS, "GSSAPI"):
        raise ConfigurationError(
            f"meter cannot authenticate with sasl.mechanism {mechanism!r}; "
            f"supported: {', '.join(PASSWORD_MECHANISMS)}, GSSAPI"
        )
    return mechanism


def _has_gssapi() -> bool:
    return importlib.util.find_spec("gssapi") is not None


def ssl_context(options: dict[str, str]) -> ssl.SSLContext:
    """The client TLS context librdkafka's ``ssl.*`` options describe."""
    cafile = capath = None
    location = options.get("ssl.ca.location")
    if location and location.strip().lower() != "probe":
        path = Path(location).expanduser()
        if path.is_dir():
            capath = str(path)
        else:
            cafile = str(path)
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=cafile, capath=capath, cadata=options.get("ssl.ca.pem")
        )
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigurationError(f"cannot load the Kafka CA (ssl.ca.location/.pem): {exc}") from exc
    if "ssl.cipher.suites" in options:
        try:
            context.set_ciphers(options["ssl.cipher.suites"])
        except ssl.SSLError as exc:
            raise ConfigurationError(f"ssl.cipher.suites: {exc}") from exc
    algorithm = options.get("ssl.endpoint.identification.algorithm", "https").strip().lower()
    if algorithm not in ("https", "none"):
        raise ConfigurationError(
            f"ssl.endpoint.identification.algorithm {algorithm!r} is neither https nor none"
        )
    context.check_hostname = algorithm == "https"
    if not _flag(options, "enable.ssl.certificate.verification", default=True):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certificate, key = options.get("ssl.certificate.location"), options.get("ssl.key.location")
    if key and not certificate:
        raise ConfigurationError(
            "ssl.key.location is set without ssl.certificate.location; set both, or neither"
        )
    if certificate:
        try:
            context.load_cert_chain(
                str(Path(certificate).expanduser()),
                str(Path(key).expanduser()) if key else None,
                options.get("ssl.key.password"),
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"cannot load the Kafka client certificate {certificate} (key {key}): {exc}"
            ) from exc
    return context


def _flag(options: dict[str, str], name: str, *, default: bool) -> bool:
    value = options.get(name)
    if value is None:
        return default
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise ConfigurationError(f"{name} {value!r} is neither true nor false")
