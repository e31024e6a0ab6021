"""`sluice schemas apply`: idempotent, evolves compatibly, refuses breaking changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from confluent_kafka.schema_registry import SchemaRegistryClient

from streams.contracts import registry
from streams.contracts.registry import IncompatibleSchemaError
from streams.runtime import kafka
from tests.support.world import World, apply, make_world


@pytest.fixture
def world(stack, tmp_path) -> World:
    return make_world(stack, tmp_path)


def edit_ticket_schema(world: World, edit) -> None:
    path = world.schemas / "avro" / "support_ticket.avsc"
    schema = json.loads(path.read_text())
    edit(schema["fields"])
    path.write_text(json.dumps(schema, indent=2))
    world.reload()


def versions(world: World) -> list[int]:
    client = SchemaRegistryClient(world.settings.registry.client_config())
    return client.get_versions(f"{world.validated}-value")


def test_apply_is_idempotent(world: World):
    specs = list(world.catalog.topics.values())
    again = kafka.ensure_topics(kafka.admin(world.settings), specs)
    assert {c.action for c in again} == {"exists"}
    changes = registry.apply(world.settings.registry, world.catalog, specs)
    assert {c.action for c in changes} == {"unchanged"}
    assert versions(world) == [1]
    client = SchemaRegistryClient(world.settings.registry.client_config())
    assert client.get_compatibility(f"{world.validated}-value") == "BACKWARD_TRANSITIVE"


def test_compatible_change_registers_a_new_version(world: World):
    edit_ticket_schema(
        world,
        lambda fields: fields.insert(
            -1,
            {
                "name": "assignee_team",
                "type": ["null", "string"],
                "default": None,
                "doc": "Team the ticket is assigned to.",
            },
        ),
    )
    apply(world)
    assert versions(world) == [1, 2]


def test_incompatible_change_is_refused_with_the_registry_reason(world: World):
    def retype(fields):
        next(f for f in fields if f["name"] == "customer_tier")["type"] = ["null", "int"]

    edit_ticket_schema(world, retype)
    with pytest.raises(IncompatibleSchemaError) as refused:
        registry.apply(world.settings.registry, world.catalog, world.catalog.topics.values())
    [refusal] = refused.value.refusals
    assert refusal.subject == f"{world.validated}-value"
    assert "customer_tier" in refusal.detail or "/fields/" in refusal.detail
    assert versions(world) == [1], "nothing may be registered when a change is refused"


def test_cli_refuses_with_exit_code_and_reason(world: World):
    def drop_default(fields):
        fields.append({"name": "region", "type": "string", "doc": "Region, without a default."})

    contract_path = world.schemas / "contracts" / f"{world.dataset}.yaml"
    contract = yaml.safe_load(contract_path.read_text())
    contract["fields"]["region"] = {"required": True}
    contract_path.write_text(yaml.safe_dump(contract))
    edit_ticket_schema(world, drop_default)
    result = subprocess.run(
        [sys.executable, "-m", "streams", "schemas", "apply"],
        env={**os.environ, **world.env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "incompatible" in result.stderr
    assert f"{world.validated}-value" in result.stderr
    assert versions(world) == [1]
