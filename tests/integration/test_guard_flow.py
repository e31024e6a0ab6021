"""guard through Kafka: planted PII never leaves guard in clear, and nothing is lost or doubled.

Injection scoring here uses the maintained patterns only (SLUICE_GUARD__EMBEDDER=none);
the semantic half, against the real Triton model, is in test_guard_triton.py.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.contracts.records import InferenceRequest, InferenceResult
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support import tenants
from tests.support.world import (
    World,
    committed_count,
    make_world,
    process_log,
    produce,
    read_all,
    running,
    start_processor,
    stop_all,
    wait_for,
)

CORPUS = [
    json.loads(line)
    for line in (Path(__file__).parents[1] / "data" / "pii_corpus.jsonl").read_text().splitlines()
]
STRUCTURED = {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS"}
GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "integration-test-secret-0123456789",
}
TENANT = "globex"  # the default policy: hash, mask, tag, block API keys


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def send_requests(world: World, copies: int = 1) -> dict[str, dict]:
    planted: dict[str, dict] = {}
    with tenants.client(world.settings, world.catalog, TENANT) as client:
        for _ in range(copies):
            for row in CORPUS:
                request = InferenceRequest.new(TENANT, "textgen", row["text"])
                client.send_request(request)
                planted[request.request_id] = row
    return planted


def send_responses(world: World) -> dict[str, dict]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    encode = serde.encoder("inference.responses")
    now = datetime.now(UTC)
    planted, values, keys = {}, [], []
    for i, row in enumerate(CORPUS):
        request_id = f"resp-{i}"
        result = InferenceResult(
            request_id, TENANT, "textgen", "ok", now, now, output_text=row["text"], output_tokens=12
        )
        values.append(encode(result.to_avro()))
        keys.append(request_id.encode())
        planted[request_id] = row
    produce(world.settings, world.topic("inference.responses"), values, keys)
    return planted


def planted_values(kinds: set[str]) -> set[bytes]:
    return {e["value"].encode() for row in CORPUS for e in row["entities"] if e["type"] in kinds}


def test_planted_pii_never_leaves_guard_in_clear(world: World):
    requests = send_requests(world)
    responses = send_responses(world)
    with_pii = sum(1 for row in CORPUS if row["entities"])
    assert with_pii > 250
    with running(world, "guard", **GUARD_ENV):
        wait_for(
            lambda: (
                committed_count(world.settings, world.topic("inference.requests.safe"))
                + committed_count(world.settings, world.topic("inference.requests.blocked"))
                >= len(requests)
            ),
            600,
            "guard to inspect every request",
        )
        results = read_all(
            world.settings, world.topic("inference.results"), len(responses), timeout=600
        )
        safe = read_all(world.settings, world.topic("inference.requests.safe"), 1, settle=2)
        blocked = read_all(world.settings, world.topic("inference.requests.blocked"), 1, settle=2)
        findings = read_all(world.settings, world.topic("pii.findings"), 1, settle=2)

    keys = Counter(m.key().decode() for m in safe + blocked)
    assert set(keys) == set(requests), "every request has an outcome"
    assert all(n == 1 for n in keys.values()), "no request is guarded twice"
    assert len(results) == len(responses)

    # Structured values (found by checksummed patterns) must never pass. Names are found by
    # NER, which is probabilistic: the ones it misses are bounded by the PERSON recall below.
    structured = planted_values(STRUCTURED | {"API_KEY"})
    names = planted_values({"PERSON"})
    missed_names = set()
    for name, messages in (
        ("safe", safe),
        ("blocked", blocked),
        ("results", results),
        ("findings", findings),
    ):
        for message in messages:
            leaked = [v for v in structured if v in message.value()]
            assert not leaked, f"{name} carries planted structured values in clear: {len(leaked)}"
            assert name != "findings" or not any(v in message.value() for v in names)
            missed_names |= {v for v in names if v in message.value()}
    log = process_log(world)
    leaked_lines = [
        line for line in log.splitlines() if any(v.decode() in line for v in structured | names)
    ]
    assert not leaked_lines, f"planted values in guard's logs: {leaked_lines[:3]}"

    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    finding_schema = world.catalog.schemas["sluice.v1.PiiFinding"]
    found: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    for message in findings:
        f = serde.decode(message.value(), finding_schema)
        found.setdefault((f["request_id"], f["field"]), []).append(
            (f["start"], f["end"], f["entity_type"])
        )
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    for ids, field in ((requests, "input_text"), (responses, "output_text")):
        for request_id, row in ids.items():
            spans = found.get((request_id, field), [])
            for entity in row["entities"]:
                kind = entity["type"]
                totals[kind] += 1
                hits[kind] += any(
                    t == kind and s < entity["end"] and e > entity["start"] for s, e, t in spans
                )
    for kind in STRUCTURED:
        assert hits[kind] == totals[kind], f"{kind}: recall {hits[kind]}/{totals[kind]}"
    assert hits["PERSON"] >= 0.9 * totals["PERSON"], f"PERSON {hits['PERSON']}/{totals['PERSON']}"
    assert len(missed_names) <= totals["PERSON"] - hits["PERSON"], "a found name was not redacted"


@pytest.mark.slow
def test_kill_9_mid_stream_loses_and_duplicates_nothing(world: World):
    requests = send_requests(world, copies=8)
    first = start_processor(world, "guard", SLUICE_RUNNER__BATCH_SIZE="32", **GUARD_ENV)
    safe_topic = world.topic("inference.requests.safe")
    blocked_topic = world.topic("inference.requests.blocked")
    group = f"{world.settings.runner.group_prefix}.guard"
    inputs = [world.topic("inference.requests")]

    def done() -> int:  # what guard has committed, from its group's offsets
        return len(requests) - kafka.group_lag(world.settings, group, inputs)

    wait_for(lambda: done() >= 200, 600, "guard to commit part of the stream")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert done() < len(requests)
    start_processor(world, "guard", SLUICE_RUNNER__BATCH_SIZE="64", **GUARD_ENV)
    try:
        wait_for(lambda: done() >= len(requests), 900, "guard to finish after the restart")
        outcomes = read_all(world.settings, safe_topic, 1, settle=3) + read_all(
            world.settings, blocked_topic, 1, settle=0
        )
    finally:
        stop_all(world)
    keys = Counter(m.key().decode() for m in outcomes)
    assert set(keys) == set(requests)
    assert max(keys.values()) == 1
