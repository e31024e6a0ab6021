"""A Schema Registry that accepts a request and never answers fails it; it does not hang."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from streams.settings import RegistrySettings


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A TCP server that accepts connections and reads, and never writes a byte back."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            held.append(connection)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        for connection in held:
            connection.close()
        server.close()


def test_the_client_config_carries_the_request_timeout() -> None:
    assert RegistrySettings(url="http://r:8081", timeout_s=7).client_config()["timeout"] == 7


def test_a_registry_that_never_answers_fails_the_request_within_its_timeouts(
    silent_registry: str,
) -> None:
    client = SchemaRegistryClient(
        RegistrySettings(url=silent_registry, timeout_s=0.3).client_config()
    )
    started = time.monotonic()
    # The client's HTTP library's ReadTimeout, after the client's own retries.
    with pytest.raises(Exception, match="timed out"):
        client.get_subjects()
    # Generous: the client retries a few times with backoff; without a timeout it never returns.
    assert time.monotonic() - started < 30
