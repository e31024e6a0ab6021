"""librdkafka security options spelled for Java clients (Spark's Kafka source, Connect)."""

from __future__ import annotations

import pytest

from streams.errors import ConfigurationError
from streams.runtime.java_kafka import jaas_config, java_security_properties
from streams.settings import KafkaSettings

#: A password with the two characters a JAAS value must escape.
QUOTING = 'pa"ss\\word'


def test_plaintext_needs_no_property() -> None:
    assert java_security_properties(KafkaSettings()) == {}
    assert java_security_properties(KafkaSettings(options={"client.id": "x"})) == {}


def test_sasl_ssl_with_scram_and_a_ca_file() -> None:
    kafka = KafkaSettings(
        options={
            "security.protocol": "sasl_ssl",
            "sasl.mechanisms": "SCRAM-SHA-512",
            "sasl.username": "sluice-validate",
            "ssl.ca.location": "/secrets/ca.pem",
        },
        sasl_password=QUOTING,
    )
    assert java_security_properties(kafka) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="sluice-validate" password="pa\\"ss\\\\word";',
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": "/secrets/ca.pem",
        "ssl.endpoint.identification.algorithm": "https",
    }


def test_hostname_verification_can_be_turned_off_as_in_librdkafka() -> None:
    kafka = KafkaSettings(
        options={"security.protocol": "SSL", "ssl.endpoint.identification.algorithm": "none"}
    )
    assert java_security_properties(kafka) == {
        "security.protocol": "SSL",
        "ssl.endpoint.identification.algorithm": "",
    }


def test_plain_uses_the_plain_login_module() -> None:
    assert jaas_config("PLAIN", "u", "p").startswith(
        "org.apache.kafka.common.security.plain.PlainLoginModule required"
    )


@pytest.mark.parametrize(
    ("options", "password", "message"),
    [
        ({"security.protocol": "SSL", "ssl.keystore.location": "/k.p12"}, None, "ssl.keystore"),
        (
            {"security.protocol": "SASL_SSL", "sasl.mechanisms": "GSSAPI", "sasl.username": "u"},
            "p",
            "GSSAPI",
        ),
        ({"security.protocol": "SASL_SSL", "sasl.mechanisms": "PLAIN"}, "p", "sasl.username"),
        ({"security.protocol": "SASL_SSL", "sasl.username": "u"}, "p", "exactly one"),
    ],
)
def test_what_cannot_be_translated_is_refused(
    options: dict[str, str], password: str | None, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        java_security_properties(KafkaSettings(options=options, sasl_password=password))
