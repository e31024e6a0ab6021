"""The security settings of Sluice's librdkafka clients, spelled for Java Kafka clients.

Spark's Kafka source and the Kafka Connect worker are Java clients: they take
``security.protocol``, ``sasl.mechanism``, ``sasl.jaas.config`` and key stores where
librdkafka takes ``sasl.mechanisms``, ``sasl.username``/``sasl.password`` and
``ssl.ca.location``. ``java_security_properties`` translates the one into the other,
so a cluster secured for the Python clients is reachable by the Java ones too.
"""

from __future__ import annotations

from streams.errors import ConfigurationError
from streams.settings import KafkaSettings

#: SASL mechanisms a Java client logs in to with a user name and password.
_LOGIN_MODULES = {
    "PLAIN": "org.apache.kafka.common.security.plain.PlainLoginModule",
    "SCRAM-SHA-256": "org.apache.kafka.common.security.scram.ScramLoginModule",
    "SCRAM-SHA-512": "org.apache.kafka.common.security.scram.ScramLoginModule",
}
#: librdkafka options translated here; any other security option is refused.
TRANSLATED = frozenset(
    {
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "ssl.ca.location",
        "ssl.endpoint.identification.algorithm",
    }
)


def is_security_option(name: str) -> bool:
    """True for a librdkafka option about encryption or authentication."""
    return name == "security.protocol" or name.startswith(("ssl.", "sasl.", "enable.ssl."))


def jaas_config(mechanism: str, username: str, password: str) -> str:
    """A ``sasl.jaas.config`` that logs in as ``username`` with ``mechanism``."""
    module = _LOGIN_MODULES.get(mechanism.upper())
    if module is None:
        raise ConfigurationError(
            f"Java Kafka clients cannot log in with sasl.mechanism {mechanism!r} from Sluice's "
            f"settings; supported: {', '.join(_LOGIN_MODULES)}"
        )
    return f'{module} required username="{_quoted(username)}" password="{_quoted(password)}";'


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def java_security_properties(kafka: KafkaSettings) -> dict[str, str]:
    """Java client properties for the security options of ``kafka`` (empty for plaintext).

    ``SLUICE_KAFKA__SASL_PASSWORD`` goes into ``sasl.jaas.config``: the result holds a
    secret whenever SASL is used, so never log it. Security options other than the
    ones in ``TRANSLATED`` raise ``ConfigurationError`` rather than being dropped.
    """
    options = {k: str(v) for k, v in kafka.options.items() if is_security_option(k)}
    if kafka.sasl_password is not None:
        options["sasl.password"] = kafka.sasl_password.get_secret_value()
    untranslated = sorted(set(options) - TRANSLATED)
    if untranslated:
        raise ConfigurationError(
            f"the Kafka option(s) {', '.join(untranslated)} have no translation for Java "
            "clients (Spark, Kafka Connect); see streams/runtime/java_kafka.py"
        )
    protocol = options.get("security.protocol", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return {}
    result = {"security.protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        if "ssl.ca.location" in options:
            result["ssl.truststore.type"] = "PEM"
            result["ssl.truststore.location"] = options["ssl.ca.location"]
        algorithm = options.get("ssl.endpoint.identification.algorithm", "https").lower()
        result["ssl.endpoint.identification.algorithm"] = "" if algorithm == "none" else algorithm
    if protocol.startswith("SASL_"):
        mechanisms = {
            options[k].upper() for k in ("sasl.mechanism", "sasl.mechanisms") if k in options
        }
        if len(mechanisms) != 1:
            raise ConfigurationError("set exactly one SASL mechanism (sasl.mechanism) for Kafka")
        mechanism = mechanisms.pop()
        username, password = options.get("sasl.username"), options.get("sasl.password")
        if not username or password is None:
            raise ConfigurationError(
                f"sasl.mechanism {mechanism} needs sasl.username and sasl.password "
                "(SLUICE_KAFKA__SASL_PASSWORD)"
            )
        result["sasl.mechanism"] = mechanism
        result["sasl.jaas.config"] = jaas_config(mechanism, username, password)
    return result
