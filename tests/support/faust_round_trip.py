"""Produce and consume 20 records through faust-streaming (aiokafka) against the local broker.

Run as a script by tests/integration/test_kafka_clients.py (CHECK_TOPIC and the stack's
SLUICE_* settings in the environment): faust owns the event loop and the process. It reaches
the broker the way meter does, with the Kafka settings mapped to faust's (TLS, SCRAM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile

import faust

from processors.meter.connection import faust_broker_options
from streams.settings import Settings

TOPIC = os.environ["CHECK_TOPIC"]
EXPECTED = 20

app = faust.App(
    f"sluice-faust-check-{TOPIC}",
    **faust_broker_options(Settings().kafka),
    store="memory://",
    topic_replication_factor=1,
    web_enabled=False,
    datadir=tempfile.mkdtemp(prefix="faust-check-"),
)
topic = app.topic(TOPIC, value_type=bytes, value_serializer="raw")
received: list[bytes] = []


@app.agent(topic)
async def collect(stream):  # type: ignore[no-untyped-def]
    async for value in stream:
        received.append(value)
        if len(received) == EXPECTED:
            print(f"received {len(received)} of {EXPECTED}", flush=True)
            # The worker owns the loop: a SIGTERM to ourselves is its graceful shutdown.
            asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGTERM)


@app.task
async def send() -> None:
    for i in range(EXPECTED):
        await topic.send(value=b"faust-%d" % i)


@app.timer(interval=60.0, on_leader=False)
async def give_up() -> None:
    if len(received) < EXPECTED:
        print(f"timed out with {len(received)}", flush=True)
        sys.exit(1)


if __name__ == "__main__":
    sys.argv = [
        sys.argv[0],
        "worker",
        os.environ.get("CHECK_LOGLEVEL", "--loglevel=warn"),
        "--without-web",
    ]
    app.main()  # type: ignore[no-untyped-call]
