"""guard through Kafka: one prompt that stalls the PII analysis is blocked alone.

A long run of separated digits keeps Presidio's phone matcher busy for seconds
(about 4.5 s at 98,000 characters on an idle core); with a 1 s analyzer timeout
guard must kill its analysis process, block that prompt with
``analyzer_timeout``, pass the other tenants' prompts of the same batch, keep
serving the next ones, and leave no analysis process behind when it stops.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from streams.contracts.records import InferenceRequest
from streams.contracts.serde import AvroSerde
from streams.runtime import kafka
from tests.support import tenants
from tests.support.world import World, make_world, process_log, read_all, running

GUARD_ENV = {
    "SLUICE_GUARD__EMBEDDER": "none",
    "SLUICE_GUARD__HASH_SECRET": "integration-test-secret-0123456789",
    "SLUICE_GUARD__ANALYZER_TIMEOUT_S": "1",
    "SLUICE_GUARD__ANALYZER_ISOLATION": "process",
}
MAIL = "Please write to maria.g@example.com about my order"
DIGITS = "1 " * 49_000  # under the default 100,000-character limit


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def send(world: World, prompts: list[tuple[str, str]]) -> list[str]:
    ids = []
    for tenant, text in prompts:
        with tenants.client(world.settings, world.catalog, tenant) as client:
            request = InferenceRequest.new(tenant, "textgen", text)
            client.send_request(request)
            ids.append(request.request_id)
    return ids


def outcomes(world: World) -> dict[str, tuple[str, InferenceRequest]]:
    serde = AvroSerde(kafka.registry(world.settings), world.catalog)
    schema = world.catalog.schemas["sluice.v1.InferenceRequest"]
    out = {}
    for topic in ("inference.requests.safe", "inference.requests.blocked"):
        for message in read_all(world.settings, world.topic(topic), 0, timeout=5, settle=1):
            request = InferenceRequest.from_avro(serde.decode(message.value(), schema))
            out[request.request_id] = (topic, request)
    return out


def wait_outcomes(
    world: World, ids: list[str], timeout: float
) -> dict[str, tuple[str, InferenceRequest]]:
    ends = time.monotonic() + timeout
    while time.monotonic() < ends:
        found = outcomes(world)
        if set(ids) <= set(found):
            return found
        time.sleep(1)
    raise AssertionError(f"guard gave no outcome to every request within {timeout:.0f} s")


def test_a_stalling_prompt_is_blocked_alone_and_guard_goes_on(world: World):
    first = send(world, [("globex", MAIL), ("acme", DIGITS), ("northbank", MAIL)])
    with running(world, "guard", **GUARD_ENV) as guard:
        found = wait_outcomes(world, first, 300)
        later = send(world, [("globex", MAIL)])
        found = wait_outcomes(world, first + later, 120)
        assert guard.poll() is None, "guard kept running"
    topic, stalled = found[first[1]]
    assert topic.endswith("inference.requests.blocked")
    assert stalled.guard is not None and stalled.guard.reason == "analyzer_timeout"
    assert stalled.input_text == "<WITHHELD:analyzer_timeout>"
    for request_id in (first[0], first[2], later[0]):
        topic, request = found[request_id]
        assert topic.endswith("inference.requests.safe"), request_id
        assert "maria.g@example.com" not in request.input_text
        assert request.guard is not None and "EMAIL_ADDRESS" in request.guard.entity_counts

    log = process_log(world)
    assert "replacing the analysis process" in log
    pids = {int(p) for p in re.findall(r"PII analysis process (\d+) ready", log)}
    assert len(pids) >= 2, "a fresh analysis process replaced the stalled one"
    for pid in pids:  # guard stopped (SIGTERM): none of its analysis processes is left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
