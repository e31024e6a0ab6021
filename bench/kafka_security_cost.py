"""What TLS + SASL cost: validate's throughput and guard's latency, secured broker vs plain.

    sluice up    # Kafka and the Schema Registry at least
    nice -n 10 .venv/bin/python -m bench.kafka_security_cost --records 50000 --requests 200

Two brokers serve the same run:

* ``secured``: the running stack's own broker (SASL_SSL, SCRAM-SHA-512, the
  StandardAuthorizer), reached with the operator's credentials, as ``sluice`` does;
* ``plain``: a throwaway single-node KRaft broker this script starts from the jars
  ``sluice up`` downloaded, in a temporary directory on free ports, PLAINTEXT only and
  without an authorizer. Its server.properties is the stack's own with every security
  line removed, so the tuning (partitions, replication, segment size) is the same. It is
  stopped and deleted at the end, whatever happens.

The stack's Schema Registry serves both (it keeps its schemas in its own H2 file and
never talks to Kafka); each side works in its own sandbox (topic prefix, groups).

Per side and round, one after the other:

* throughput, as bench/validate_throughput.py measures it: a bare consume→produce
  passthrough, the same in transactions (the runner's guarantees without Sluice
  code), and the validate processor in the runner; records/s, best of the rounds;
* guard's latency: ``sluice run guard`` (a child process, as the integration tests run
  it) on the side's broker; signed requests from the SDK at a fixed rate; each timed
  from just before the SDK produces it to the moment a read_committed consumer sees
  guard's decision on inference.requests.safe or .blocked. Percentiles over every
  request of every round. Guard's start-up (spaCy, the analysis process, reading its
  request-id window) happens before the clock starts: a few warm-up requests are
  decided first.

Guard uses the stack's Triton for its injection embedder when that Triton answers;
otherwise it runs with ``SLUICE_GUARD__EMBEDDER=none`` (patterns only, no embedding
call). The output says which.

Before the first round each side does one untimed bare passthrough, so that neither
broker's JVM is measured while its JIT warms up. Rounds alternate plain, secured, plain,
secured… so that drift in the machine's load hits both sides alike.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.validate_throughput import passthrough, produce_input, run_validate
from streams.contracts.records import InferenceRequest
from streams.runtime import kafka
from streams.runtime.waiting import wait_until
from streams.sdk.client import SluiceClient
from streams.settings import KafkaSettings, Settings
from streams.stack import sandbox
from streams.stack.components import INFRA, Kafka
from streams.stack.process import ManagedProcess
from streams.stack.sandbox import Sandbox
from streams.stack.tenant_keys import ensure_tenants, tenant_signing_key
from streams.stack.triton import Triton

PLAIN, SECURED = "plain", "secured"
SIDES = (PLAIN, SECURED)
VARIANTS = ("bare", "transactional", "validate")
PERCENTILES = (50, 95, 99)
SAFE, BLOCKED = "inference.requests.safe", "inference.requests.blocked"
#: A tenant ``sluice up`` registers (guard reads the registry once, at start).
TENANT = "acme"
MODEL = "gpt-4o"
WARM_UP_REQUESTS = 3

#: Lines of the stack's server.properties that are about security (or name its listeners,
#: ports and data directory): dropped, and the plain broker's own put in their place.
SECURITY_PREFIXES = ("ssl.", "sasl.", "listener.name.", "authorizer.", "allow.everyone.")
REPLACED_KEYS = frozenset(
    {
        "listeners",
        "advertised.listeners",
        "listener.security.protocol.map",
        "inter.broker.listener.name",
        "controller.listener.names",
        "controller.quorum.bootstrap.servers",
        "super.users",
        "log.dirs",
    }
)


# -- pure helpers ---------------------------------------------------------------------------
def plain_broker_properties(
    template: str, *, port: int, controller_port: int, log_dir: Path
) -> str:
    """The stack's server.properties ``template`` without TLS, SASL or an authorizer.

    Everything else (node roles, replication of the internal topics, partitions,
    retention, segment size, rebalance delay) is kept as the stack has it, so that the
    two brokers differ only in security. Raises when the template holds a placeholder
    this function does not know: a new setting must be looked at before it is compared.
    """
    kept = []
    for line in template.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key = stripped.split("=", 1)[0].strip()
        if key in REPLACED_KEYS or key.startswith(SECURITY_PREFIXES):
            continue
        if "${" in stripped:
            raise ValueError(
                f"server.properties line {key!r} has a placeholder the plain broker does not "
                "fill; decide whether it is about security and update plain_broker_properties"
            )
        kept.append(stripped)
    own = [
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name=PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}",
        f"log.dirs={log_dir}",
    ]
    return "\n".join(["# Throwaway PLAINTEXT broker of bench/kafka_security_cost.py", *own, *kept])


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolating linearly between ranks."""
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class SideResults:
    """What one side measured over all rounds."""

    rates: dict[str, list[float]] = field(default_factory=lambda: {v: [] for v in VARIANTS})
    latencies_ms: list[float] = field(default_factory=list)
    decisions: Counter[str] = field(default_factory=Counter)
    lost: int = 0


def report_lines(results: Mapping[str, SideResults]) -> list[str]:
    """The table: per side, best records/s per variant and guard's latency percentiles.

    The last column is secured / plain: below 1 for throughput, above 1 for latency,
    means TLS + SASL cost that much.
    """
    plain, secured = results[PLAIN], results[SECURED]
    lines = [f"{'':<26}{'plain':>12}{'secured':>12}{'secured/plain':>15}"]
    for variant in VARIANTS:
        best = [max(plain.rates[variant]), max(secured.rates[variant])]
        lines.append(
            f"{variant + ' (records/s)':<26}{best[0]:>12,.0f}{best[1]:>12,.0f}"
            f"{best[1] / best[0]:>15.2f}"
        )
    for q in PERCENTILES:
        p = [percentile(plain.latencies_ms, q), percentile(secured.latencies_ms, q)]
        lines.append(f"{f'guard p{q} (ms)':<26}{p[0]:>12.1f}{p[1]:>12.1f}{p[1] / p[0]:>15.2f}")
    for name, side in (("plain", plain), ("secured", secured)):
        runs = "; ".join(f"{v} " + ", ".join(f"{r:,.0f}" for r in side.rates[v]) for v in VARIANTS)
        decided = ", ".join(f"{k} {n}" for k, n in sorted(side.decisions.items()))
        lines.append(
            f"{name} runs: {runs}; guard: {len(side.latencies_ms)} timed ({decided}), "
            f"{side.lost} not decided in time"
        )
    return lines


# -- the throwaway broker ---------------------------------------------------------------------
def free_port() -> int:
    """A TCP port nothing listens on now (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")
        if not text.startswith("-"):  # Kafka never makes one a command line would take for a flag
            return text


@contextmanager
def plain_broker(stack: Settings, workdir: Path) -> Iterator[str]:
    """A PLAINTEXT KRaft broker from the stack's Kafka jars; yields its bootstrap address.

    Same JVM, heap and GC flags as the stack's broker. Stopped in any case.
    """
    secured = Kafka(stack)  # where the stack keeps its Kafka: java, classpath, heap
    java = str(secured._java())  # the stack's own choice of JDK
    classpath = secured.classpath(secured.classpath_file)
    port, controller_port = free_port(), free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    data = workdir / "data"
    properties = workdir / "server.properties"
    template = (stack.project_root / INFRA / "kafka" / "server.properties").read_text()
    properties.write_text(
        plain_broker_properties(template, port=port, controller_port=controller_port, log_dir=data)
    )
    log4j = workdir / "log4j2.properties"
    shutil.copy(stack.project_root / INFRA / "kafka" / "log4j2.properties", log4j)
    logging_flag = f"-Dlog4j2.configurationFile={log4j}"
    storage_tool = [java, logging_flag, "-cp", classpath, "kafka.tools.StorageTool"]
    formatted = subprocess.run(
        [*storage_tool, "format", "-t", _cluster_id(), "-c", str(properties), "--standalone"],
        capture_output=True,
        text=True,
        check=False,
    )
    if formatted.returncode != 0:
        raise RuntimeError(f"formatting the plain broker's storage failed:\n{formatted.stdout}")
    heap = stack.stack.kafka_heap
    process = ManagedProcess("kafka-plain", workdir / "kafka.pid", workdir / "kafka.log")
    command = [java, f"-Xmx{heap}", f"-Xms{heap}", "-XX:+UseG1GC", "-Dsluice.component=kafka-plain"]
    command += [logging_flag, "-cp", classpath, "kafka.Kafka", str(properties)]
    address = f"127.0.0.1:{port}"
    try:
        process.start(command)

        def answers() -> bool:
            if not process.is_running():
                raise RuntimeError(f"the plain broker exited:\n{process.log_tail(30)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    pass
                client = AdminClient({"bootstrap.servers": address, "log_level": 0})
                return len(client.list_topics(timeout=3).brokers) == 1
            except Exception:  # not listening yet
                return False

        if not wait_until(answers, stack.stack.start_timeout_s, interval=0.5):
            raise RuntimeError(f"the plain broker did not answer:\n{process.log_tail(30)}")
        yield address
    finally:
        process.stop()


def plain_settings(stack: Settings, address: str) -> Settings:
    """The stack's settings with clients pointed at the plain broker, without credentials."""
    options = {"security.protocol": "PLAINTEXT"}
    return stack.model_copy(
        update={"kafka": KafkaSettings(bootstrap_servers=address, options=options)}
    )


def kafka_environment(settings: Settings) -> dict[str, str]:
    """``SLUICE_KAFKA__*`` of the plain side (the secured side's come from `sluice run`)."""
    if settings.kafka.sasl_password is not None:
        return {}
    return {
        "SLUICE_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "SLUICE_KAFKA__OPTIONS": json.dumps(settings.kafka.options),
    }


# -- guard's latency --------------------------------------------------------------------------
def guard_embedder(stack: Settings, choice: str) -> str:
    """``triton`` when asked or when the stack's Triton answers (``auto``), else ``none``."""
    if choice != "auto":
        return choice
    try:
        Triton(stack).probe()
    except Exception:  # not started, or not ready
        return "none"
    return "triton"


class DecisionWatch:
    """Sees guard's decisions as a downstream consumer would: read_committed, from now on."""

    def __init__(self, box: Sandbox) -> None:
        self.seen: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        settings = box.settings
        self._consumer = Consumer(
            settings.kafka.client_config(
                **{
                    "group.id": f"bench-watch-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 100,
                }
            )
        )
        self._names = {box.topic(SAFE): "safe", box.topic(BLOCKED): "blocked"}
        ends = kafka.end_offsets(self._consumer, self._names)
        self._consumer.assign(
            [TopicPartition(tp.topic, tp.partition, end) for tp, end in ends.items()]
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for message in self._consumer.consume(100, 0.1):
                arrived = time.perf_counter()
                key, outcome = message.key(), self._names.get(message.topic() or "")
                if message.error() is None and key is not None and outcome is not None:
                    with self._lock:
                        self.seen.setdefault(key.decode("utf-8", "replace"), (arrived, outcome))

    def decided(self, request_id: str) -> tuple[float, str] | None:
        with self._lock:
            return self.seen.get(request_id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


def prompts(settings: Settings) -> list[str]:
    """Support-ticket bodies from the sample dataset: the text of real-looking requests.

    The sample holds broken records on purpose (validate's dead letters): skipped here.
    """
    sample = settings.project_root / "schemas/datasets/support_tickets/sample.jsonl"
    texts = []
    for line in sample.read_text().splitlines():
        try:
            body = json.loads(line).get("body")
        except (ValueError, AttributeError):
            continue
        if isinstance(body, str) and body:
            texts.append(f"Draft a reply to this support ticket: {body}")
    return texts


@contextmanager
def running_guard(box: Sandbox, env: Mapping[str, str], log: Path) -> Iterator[None]:
    """``sluice run guard`` in the sandbox; SIGTERM (then SIGKILL) at the end."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "run", "guard"],
            env={**os.environ, **box.env, **env},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def guard_latency(
    box: Sandbox,
    env: Mapping[str, str],
    log: Path,
    *,
    requests: int,
    rate: float,
    texts: Sequence[str],
    results: SideResults,
) -> None:
    """Start guard, warm it up, then time ``requests`` signed requests sent at ``rate``/s."""
    client = SluiceClient(
        box.settings,
        box.catalog,
        tenant=TENANT,
        signing_key=tenant_signing_key(box.settings, TENANT),
    )
    watch = DecisionWatch(box)
    sent: dict[str, float] = {}
    try:
        with running_guard(box, env, log):
            _warm_up(client, watch, texts, log)
            start = time.perf_counter()
            for index in range(requests):
                time.sleep(max(0.0, start + index / rate - time.perf_counter()))
                request = InferenceRequest.new(TENANT, MODEL, texts[index % len(texts)])
                sent[request.request_id] = time.perf_counter()
                client.send_request(request)
            client.flush()
            wait_until(lambda: all(watch.decided(r) for r in sent), 120, interval=0.2)
    finally:
        watch.close()
        client.close()
    for request_id, at in sent.items():
        decision = watch.decided(request_id)
        if decision is None:
            results.lost += 1
            continue
        results.latencies_ms.append((decision[0] - at) * 1000)
        results.decisions[decision[1]] += 1


def _warm_up(client: SluiceClient, watch: DecisionWatch, texts: Sequence[str], log: Path) -> None:
    """Until guard has decided a few requests: its start-up is not what is measured."""
    ids = []
    for text in texts[:WARM_UP_REQUESTS]:
        ids.append(client.send_request(InferenceRequest.new(TENANT, MODEL, text)))
    client.flush()
    if not wait_until(lambda: all(watch.decided(i) for i in ids), 600, interval=0.5):
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"guard decided none of its warm-up requests in 10 min:\n{tail}")


# -- the run ----------------------------------------------------------------------------------
def prepare_side(settings: Settings, workdir: Path, records: int) -> tuple[Sandbox, str, str]:
    """A sandbox on the side's broker, its raw input produced; (sandbox, raw topic, sink)."""
    box = sandbox.create(settings, workdir)
    box.apply()
    raw_topic = box.topic("raw.support_tickets")
    sink = f"bench-passthrough-{box.suffix}"
    admin = kafka.admin(box.settings)  # held until the topic exists: its futures die with it
    admin.create_topics([NewTopic(sink, 3, 1)])[sink].result()
    produce_input(box.settings, raw_topic, records)
    return box, raw_topic, sink


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000, help="per side and round")
    parser.add_argument("--requests", type=int, default=200, help="guard, per side and round")
    parser.add_argument("--rate", type=float, default=20.0, help="guard requests per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--embedder", choices=("auto", "triton", "none"), default="auto")
    args = parser.parse_args()
    stack = Settings()
    if stack.kafka.sasl_password is None:
        sys.exit("no operator credentials for the local broker: run `sluice up` first")
    embedder = guard_embedder(stack, args.embedder)
    print(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {load()}, {os.cpu_count()} CPUs")
    print(
        f"guard's injection embedder: {embedder}"
        + ("" if embedder == "triton" else " (patterns only: no Triton call per request)")
    )
    ensure_tenants(stack, [TENANT])  # before guard starts: it reads the registry once
    guard_env = {
        "SLUICE_GUARD__EMBEDDER": embedder,
        "SLUICE_GUARD__HASH_SECRET": secrets.token_hex(32),
        "SLUICE_METRICS__ENABLED": "false",
        "SLUICE_STACK__PROCESSOR_PRINCIPALS": "false",  # the secured side acts as the operator
    }
    texts = prompts(stack)
    results = {side: SideResults() for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="kafka-security-cost-") as tmp:
        workdir = Path(tmp)
        print("starting the throwaway PLAINTEXT broker")
        with plain_broker(stack, workdir / "plain-broker") as address:
            print(f"plain broker at {address}; secured broker at {stack.kafka.bootstrap_servers}")
            settings = {PLAIN: plain_settings(stack, address), SECURED: stack}
            sides = {}
            for side in SIDES:
                print(f"[{side}] topics, schemas and {args.records:,} raw records")
                sides[side] = prepare_side(settings[side], workdir / side, args.records)
            for side in SIDES:
                # The plain broker's JVM was started a minute ago: without this, its first
                # round would measure its JIT warming up, not its listener.
                box, raw_topic, sink = sides[side]
                rate = passthrough(box.settings, raw_topic, sink, args.records, transactional=False)
                print(f"[{side}] warm-up passthrough (not counted): {rate:,.0f} records/s")
            for round_ in range(1, args.rounds + 1):
                for side in SIDES:
                    box, raw_topic, sink = sides[side]
                    rates = results[side].rates
                    tag = f"[round {round_}/{args.rounds} {side}]"
                    for variant in ("bare", "transactional"):
                        rate = passthrough(
                            box.settings,
                            raw_topic,
                            sink,
                            args.records,
                            transactional=variant == "transactional",
                        )
                        rates[variant].append(rate)
                        print(f"{tag} {variant}: {rate:,.0f} records/s")
                    rates["validate"].append(run_validate(box.settings, raw_topic, args.records))
                    print(f"{tag} validate: {rates['validate'][-1]:,.0f} records/s")
                    print(f"{tag} guard: starting, then {args.requests} requests")
                    before = len(results[side].latencies_ms)
                    guard_latency(
                        box,
                        {**guard_env, **kafka_environment(box.settings)},
                        workdir / f"guard-{side}-{round_}.log",
                        requests=args.requests,
                        rate=args.rate,
                        texts=texts,
                        results=results[side],
                    )
                    timed = results[side].latencies_ms[before:]
                    with suppress(ValueError):
                        print(
                            f"{tag} guard: p50 {percentile(timed, 50):.1f} ms, "
                            f"p99 {percentile(timed, 99):.1f} ms; {load()}"
                        )
        print("plain broker stopped")
    print(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}, {load()}")
    print()
    for line in report_lines(results):
        print(line)


if __name__ == "__main__":
    main()
