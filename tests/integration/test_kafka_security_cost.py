"""bench/kafka_security_cost.py's throwaway broker: PLAINTEXT clients work, and it is gone after.

The benchmark compares the stack's secured broker with this one; a broker that kept
running, or that needed credentials, would spoil the comparison or the machine.
"""

from __future__ import annotations

import socket

import pytest

from bench.kafka_security_cost import plain_broker, plain_settings
from streams.stack import sandbox
from tests.support.world import produce, read_all


def test_the_plain_broker_serves_clients_without_credentials_then_stops(stack, tmp_path):
    with plain_broker(stack, tmp_path / "broker") as address:
        settings = plain_settings(stack, address)
        assert settings.kafka.client_config()["security.protocol"] == "PLAINTEXT"
        assert "sasl.password" not in settings.kafka.client_config()
        # Topics on the plain broker, schemas in the stack's registry: what the bench does.
        box = sandbox.create(settings, tmp_path / "sandbox")
        box.apply()
        topic = box.topic("raw.support_tickets")
        produce(box.settings, topic, [b"one", b"two"])
        values = sorted(m.value() for m in read_all(box.settings, topic, expect=2, settle=0.5))
        assert values == [b"one", b"two"]
        port = int(address.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
