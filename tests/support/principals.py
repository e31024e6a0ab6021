"""Clients of the secured local stack that log in as a given principal, not the operator."""

from __future__ import annotations

import json

from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import AdminClient
from pydantic import SecretStr

from streams.contracts.acls import AclPlan
from streams.runtime import kafka
from streams.runtime.acls import apply_plan, existing_grants
from streams.settings import Settings
from streams.stack import kafka_security


def as_principal(settings: Settings, principal: str) -> Settings:
    """The settings of a client that authenticates as ``principal`` (a SCRAM user)."""
    env = kafka_security.client_environment(settings, principal)
    kafka_settings = settings.kafka.model_copy(
        update={
            "options": json.loads(env["SLUICE_KAFKA__OPTIONS"]),
            "sasl_password": SecretStr(env["SLUICE_KAFKA__SASL_PASSWORD"]),
        }
    )
    return settings.model_copy(update={"kafka": kafka_settings})


def produce_one(settings: Settings, topic: str) -> KafkaError | None:
    """Produce one record and wait for its delivery report: None, or the broker's error."""
    outcome: list[KafkaError | None] = []
    producer = Producer(settings.kafka.client_config(**{"message.timeout.ms": 15000}))
    producer.produce(
        topic, value=b"acl-probe", on_delivery=lambda error, _msg: outcome.append(error)
    )
    producer.flush(30)
    assert outcome, f"no delivery report for {topic}"
    return outcome[0]


def may_describe(settings: Settings, topic: str) -> bool:
    """True when the broker shows ``topic`` to this client (any grant on it implies it).

    Writes nothing, so a test can wait for its bindings to reach the broker without
    putting a probe record where a processor would read it.
    """
    client = AdminClient(settings.kafka.client_config())
    found = client.list_topics(topic, timeout=10).topics.get(topic)
    return found is not None and found.error is None


def drop_bindings_under(settings: Settings) -> None:
    """Delete, as the operator, every binding named under the settings' topic or group prefix.

    What a sandbox's ``sluice acl apply`` made; the Connect worker's bindings are named
    from the worker's group, shared by every sandbox, and stay.
    """
    admin = kafka.admin(settings)
    prefixes = (settings.topic_prefix, settings.runner.group_prefix + ".")
    mine = [g for g in existing_grants(admin) if g.name.startswith(prefixes)]
    apply_plan(admin, AclPlan(create=[], delete=mine, kept=[]))
