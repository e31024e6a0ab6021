"""Helpers for integration tests: a fresh catalog per test, processes, topic readers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from processors.infer.settings import InferSettings, group_of
from streams.contracts.catalog import Catalog
from streams.llm.model_catalog import DEFAULT_LANE, load_models
from streams.runtime.waiting import wait_until
from streams.settings import Settings
from streams.stack import sandbox
from streams.stack.sandbox import Sandbox
from streams.stack.venv import venv_python


@dataclass
class World:
    """A sandbox (own topic prefix, subjects, groups, schemas) on the shared stack."""

    sandbox: Sandbox
    dataset: str = "support_tickets"
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        return self.sandbox.settings

    @property
    def catalog(self) -> Catalog:
        return self.sandbox.catalog

    @property
    def schemas(self) -> Path:
        return self.sandbox.schemas

    @property
    def env(self) -> dict[str, str]:
        return self.sandbox.env

    def topic(self, logical: str) -> str:
        """Cluster name of a catalog topic in this world."""
        return self.sandbox.topic(logical)

    @property
    def raw(self) -> str:
        return self.topic(f"raw.{self.dataset}")

    @property
    def validated(self) -> str:
        return self.topic(f"{self.dataset}.validated")

    @property
    def dlq(self) -> str:
        return self.topic(f"raw.{self.dataset}.dlq")

    def reload(self) -> None:
        """Re-read the catalog after a test edited the schema files."""
        self.sandbox = self.sandbox.reload()


def make_world(base: Settings, tmp_path: Path) -> World:
    """A sandbox of the whole catalog, applied to the stack."""
    box = sandbox.create(base, tmp_path)
    box.apply()
    return World(box)


def apply(world: World) -> None:
    """What `sluice schemas apply` does, for the world's catalog."""
    world.reload()
    world.sandbox.apply()


def start_processor(world: World, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`sluice run <name>` as a real child process with the world's settings."""
    log = open(world.schemas.parent / f"{name}-{len(world.processes)}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "streams", "run", name, *args],
        env={**os.environ, **world.env, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    world.processes.append(process)
    return process


def infer_lanes(world: World) -> list[str]:
    """The lanes of the world's model catalog, the default lane first."""
    return [DEFAULT_LANE, *load_models(world.settings.triton.models_file).lanes]


def infer_groups(world: World) -> list[str]:
    """The consumer group of each infer lane (processors/infer/settings.py: group_of)."""
    prefix = world.settings.runner.group_prefix
    return [f"{prefix}.{group_of(InferSettings(lane=lane))}" for lane in infer_lanes(world)]


def start_infer(world: World, *args: str, **env: str) -> list[subprocess.Popen[bytes]]:
    """infer as a deployment runs it: one process per lane of the model catalog.

    The default lane's process comes first. With ``SLUICE_INFER__LANE`` in ``env``, only
    that lane is started.
    """
    if "SLUICE_INFER__LANE" in env:
        return [start_processor(world, "infer", *args, **env)]
    return [
        start_processor(world, "infer", *args, **env, SLUICE_INFER__LANE=lane)
        for lane in infer_lanes(world)
    ]


def stop_all(world: World) -> None:
    for process in world.processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in world.processes:
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()


def process_log(world: World) -> str:
    return "\n".join(
        p.read_text(errors="replace") for p in sorted(world.schemas.parent.glob("*.log"))
    )


def processor_logs(world: World, name: str) -> list[str]:
    """The log of each ``name`` process started in ``world``, in the order they started."""
    paths = world.schemas.parent.glob(f"{name}-*.log")
    return [
        p.read_text(errors="replace")
        for p in sorted(paths, key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    ]


def produce(
    settings: Settings,
    topic: str,
    values: list[bytes | None],
    keys: list[bytes | None] | None = None,
    headers: list[list[tuple[str, bytes]]] | None = None,
) -> None:
    producer = Producer(
        settings.kafka.client_config(**{"enable.idempotence": True, "linger.ms": 5})
    )
    for index, value in enumerate(values):
        key = keys[index] if keys else None
        extra = headers[index] if headers else None
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=extra)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def read_all(
    settings: Settings, topic: str, expect: int, *, timeout: float = 120.0, settle: float = 3.0
) -> list[Message]:
    """Every committed record of ``topic``: waits until ``expect`` arrived, then ``settle``
    seconds more so that duplicates would show up too."""
    consumer = Consumer(
        settings.kafka.client_config(
            **{
                "group.id": f"reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
    messages: list[Message] = []
    deadline = time.monotonic() + timeout
    settled_at: float | None = None
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.5)
            messages += [m for m in batch if m.error() is None]
            if len(messages) >= expect:
                settled_at = settled_at or time.monotonic()
                if time.monotonic() - settled_at >= settle:
                    break
    finally:
        consumer.close()
    return messages


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Assert that ``condition`` comes true within ``timeout`` seconds."""
    if not wait_until(condition, timeout, interval=0.5):
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def committed_count(settings: Settings, topic: str) -> int:
    """Records visible to a read_committed consumer right now (fast: counts, no decode)."""
    return len(read_all(settings, topic, expect=0, timeout=5, settle=0.5))


@contextmanager
def running_all(world: World, names: list[str], **env: str) -> Iterator[None]:
    """Several processors at once; SIGTERM (graceful: spans and batches flushed) at the end."""
    for name in names:
        if name == "infer":
            start_infer(world, **env)  # every lane: each serves only its own models
        else:
            start_processor(world, name, **env)
    try:
        yield
    finally:
        stop_all(world)


@contextmanager
def running(world: World, name: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    """``name`` until the block ends (infer: every lane; the default lane's process yielded)."""
    process = (
        start_infer(world, **env)[0] if name == "infer" else start_processor(world, name, **env)
    )
    try:
        yield process
    finally:
        stop_all(world)


def reference(texts: list[str]) -> dict[str, Any]:
    """sentence-transformers' own encode of ``texts``, run in the Triton venv (it has torch)."""
    venv = Path(os.environ["SLUICE_STACK__TRITON_VENV"])
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [str(venv_python(venv)), str(root / "infra/triton/reference.py")],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
        cwd=root / "infra/triton",
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


#: For confluent-kafka's own AvroDeserializer: subjects by topic name, as Sluice registers
#: them. Its default first asks the registry for the topic's schema associations, an API
#: the Apicurio registry of the local stack does not serve; that request was seen to
#: hang waiting for the response.
TOPIC_SUBJECTS = {"subject.name.strategy.type": "TOPIC"}
