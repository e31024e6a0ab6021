"""The local broker takes only TLS + SCRAM clients, and authorizes them with ACLs.

The stack's operator (a super user) may do anything; a processor's principal is
authenticated but, with no ACL granting it a topic, denied.
"""

from __future__ import annotations

import socket
import ssl
import uuid
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.runtime import kafka
from streams.settings import Settings
from streams.stack import kafka_security
from tests.support.world import read_all


def _new_topic(settings: Settings) -> str:
    name = f"it-sec-{uuid.uuid4().hex[:10]}"
    admin = kafka.admin(settings)
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    return name


def _errors_of(conf: dict[str, Any]) -> list[KafkaError]:
    """The errors a client with ``conf`` reports while trying to read the cluster's metadata."""
    errors: list[KafkaError] = []
    client = AdminClient({**conf, "error_cb": errors.append, "socket.timeout.ms": 5000})
    with pytest.raises(KafkaException) as refused:
        client.list_topics(timeout=8)
    client.poll(1)  # serves error_cb
    return [refused.value.args[0], *errors]


def test_a_client_without_credentials_is_refused(stack: Settings) -> None:
    errors = _errors_of({"bootstrap.servers": stack.kafka.bootstrap_servers})
    assert errors, "a plaintext client never gets the metadata"


def test_a_wrong_password_is_refused(stack: Settings) -> None:
    conf = kafka_security.client_options(stack, kafka_security.OPERATOR)
    conf["sasl.password"] = "not-the-password"
    errors = _errors_of(conf)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors


def test_a_client_that_does_not_trust_the_local_ca_is_refused(stack: Settings) -> None:
    conf = kafka_security.client_options(stack, kafka_security.OPERATOR)
    del conf["ssl.ca.location"]  # the system's CAs never signed the local broker
    errors = _errors_of(conf)
    assert any(e.code() == KafkaError._SSL for e in errors), errors


def test_the_controller_listener_takes_only_the_brokers_certificate(stack: Settings) -> None:
    context = ssl.create_default_context(cafile=str(kafka_security.ca_path(stack)))
    port = stack.stack.kafka_controller_port
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)  # it listens...
    try:
        with (
            pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)),
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            # ...but without a client certificate, TLS fails. TLS 1.3 finishes the client's
            # side first: the refusal comes with the first read.
            tls.sendall(b"\0\0\0\0")
            if not tls.recv(1):
                raise EOFError("closed by the controller")
    finally:
        raw.close()


def test_the_operator_creates_topics_and_produces_and_consumes(stack: Settings) -> None:
    assert stack.kafka.options["sasl.username"] == kafka_security.OPERATOR
    topic = _new_topic(stack)
    producer = Producer(stack.kafka.client_config())
    for i in range(5):
        producer.produce(topic, value=b"%d" % i)
    assert producer.flush(30) == 0
    values = sorted(m.value() for m in read_all(stack, topic, 5, settle=1))
    assert values == [b"%d" % i for i in range(5)]


def test_a_processor_principal_without_acls_is_denied(stack: Settings) -> None:
    topic = _new_topic(stack)
    conf = kafka_security.client_options(stack, kafka_security.PROCESSOR_PRINCIPALS["validate"])
    failures: list[KafkaError] = []

    def delivered(error: KafkaError | None, _message: object) -> None:
        if error is not None:
            failures.append(error)

    producer = Producer({**conf, "message.timeout.ms": 10000})
    producer.produce(topic, value=b"x", on_delivery=delivered)
    producer.flush(20)
    assert [e.code() for e in failures] == [KafkaError.TOPIC_AUTHORIZATION_FAILED]

    consumer = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    codes = set()
    for _ in range(20):
        message = consumer.poll(1.0)
        if message is not None and message.error() is not None:
            codes.add(message.error().code())
            break
    consumer.close()
    assert codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


def test_sluice_up_keeps_every_principals_credential(stack: Settings) -> None:
    """Every principal can log in (authentication is before authorization: it gets a
    metadata answer, just without the topics it may not describe)."""
    topic = _new_topic(stack)
    for principal in kafka_security.PRINCIPALS:
        conf = kafka_security.client_options(stack, principal)
        metadata = AdminClient(conf).list_topics(timeout=15)
        visible = topic in metadata.topics
        assert visible == (principal in kafka_security.BOOTSTRAP_PRINCIPALS), principal
