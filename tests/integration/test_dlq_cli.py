"""`sluice dlq show` and `sluice dlq replay` against the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from streams.runtime.dead_letters import REPLAY_COUNT
from tests.support.world import World, make_world, produce, read_all, running


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def sluice(world: World, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "streams", *args],
        env={**os.environ, **world.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_show_then_fix_the_contract_and_replay_once(world: World, good_ticket):
    valid = [json.dumps(good_ticket(ticket_id=f"TCK-{i:08d}")).encode() for i in range(20)]
    invalid = [
        json.dumps(good_ticket(ticket_id=f"TCK-{i:08d}", priority="critical")).encode()
        for i in range(20, 30)
    ]
    produce(world.settings, world.raw, valid + invalid)
    with running(world, "validate"):
        read_all(world.settings, world.validated, 20, settle=0.5)
        read_all(world.settings, world.dlq, 10, settle=0.5)

    shown = sluice(world, "dlq", "show", world.raw, "--limit", "5").stdout
    assert "last 5 records" in shown
    assert "priority: is not one of [low, medium, high, urgent] [enum]" in shown
    assert "critical" not in shown, "payload values must not be printed"

    contract_path = world.schemas / "contracts" / f"{world.dataset}.yaml"
    contract = yaml.safe_load(contract_path.read_text())
    contract["version"] = 2
    contract["fields"]["priority"]["enum"].append("critical")
    contract_path.write_text(yaml.safe_dump(contract))

    with running(world, "validate"):
        assert (
            "replayed 10 records: 10 to " + world.raw
            in sluice(world, "dlq", "replay", world.raw).stdout
        )
        validated = read_all(world.settings, world.validated, 30)
        assert "replayed 0 records" in sluice(world, "dlq", "replay", world.raw).stdout
    assert len(validated) == 30
    replayed = [m for m in validated if dict(m.headers() or []).get(REPLAY_COUNT) == b"1"]
    assert replayed == [], "trace headers only are copied to outputs"
    assert sorted(m.key() for m in validated) == sorted(f"TCK-{i:08d}".encode() for i in range(30))
    assert len(read_all(world.settings, world.dlq, 10, settle=1)) == 10, "nothing failed again"


def test_dry_run_sends_nothing(world: World):
    produce(world.settings, world.raw, [b"not json"])
    with running(world, "validate"):
        read_all(world.settings, world.dlq, 1, settle=0.5)
    assert "would replay 1 records" in sluice(world, "dlq", "replay", world.raw, "--dry-run").stdout
    assert len(read_all(world.settings, world.raw, 1, settle=1)) == 1


def test_a_forged_error_topic_is_never_replayed_into_it(world: World):
    """Anyone who can write to the DLQ can name any topic in sluice.error.topic."""
    from confluent_kafka import Producer

    safe = world.topic("inference.requests.safe")
    producer = Producer(world.settings.kafka.client_config())
    for value, named in ((b"forged", safe), (b"genuine", world.raw)):
        producer.produce(
            world.dlq,
            value=value,
            headers=[
                ("sluice.error.topic", named.encode()),
                ("sluice.error.class", b"[/bold]\x1b[2J"),
                ("sluice.error.message", b"[red]hostile[/red]\r"),
                ("sluice.error.partition", b"not a number"),
            ],
        )
    producer.flush(30)

    shown = sluice(world, "dlq", "show", world.raw).stdout
    assert "[/bold]\\x1b[2J" in shown and "[red]hostile[/red]\\x0d" in shown
    assert "\x1b[2J" not in shown and "\r" not in shown

    said = " ".join(sluice(world, "dlq", "replay", world.raw).stdout.split())
    assert f"replayed 1 records: 1 to {world.raw}" in said
    assert (
        f"skipped 1 records whose sluice.error.topic header names another topic (1 naming {safe})"
        in said
    )
    assert [m.value() for m in read_all(world.settings, world.raw, 1, settle=1)] == [b"genuine"]
    assert read_all(world.settings, safe, 0, settle=1) == []

    refused = subprocess.run(
        [sys.executable, "-m", "streams", "dlq", "replay", world.raw, "--to", "elsewhere"],
        env={**os.environ, **world.env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1
    assert "is not a topic of the catalog" in refused.stdout + refused.stderr
