"""The topic catalog: datasets expand, DLQs exist for inputs, mistakes are refused."""

from __future__ import annotations

import shutil

import pytest
import yaml

from streams.contracts.catalog import CatalogError, load_catalog
from streams.settings import PROJECT_ROOT

SCHEMAS = PROJECT_ROOT / "schemas"


def test_dataset_expands_to_three_topics():
    catalog = load_catalog(SCHEMAS)
    dataset = catalog.dataset("support_tickets")
    raw = catalog.topic(dataset.raw_topic)
    assert raw.value == "sluice.v1.RawEvent"
    assert raw.dlq_topic == "raw.support_tickets.dlq"
    assert catalog.topic("raw.support_tickets.dlq").value == "bytes"
    assert catalog.topic("support_tickets.validated").value == "sluice.v1.SupportTicket"


def test_defaults_and_overrides():
    catalog = load_catalog(SCHEMAS)
    requests = catalog.topic("inference.requests")
    assert requests.compatibility == "BACKWARD_TRANSITIVE"
    assert requests.configs["cleanup.policy"] == "delete"
    assert requests.subject == "inference.requests-value"
    assert catalog.topic("inference.requests.dlq").configs["retention.ms"] == "2592000000"


def test_every_schema_has_docs_on_every_field():
    catalog = load_catalog(SCHEMAS)
    for schema in catalog.schemas.values():
        for field in schema.json["fields"]:
            assert field.get("doc"), f"{schema.fullname}.{field['name']} has no doc"


def copy_schemas(tmp_path):
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def test_unknown_schema_is_refused(tmp_path):
    schemas = copy_schemas(tmp_path)
    topics = yaml.safe_load((schemas / "topics.yaml").read_text())
    topics["topics"].append({"name": "x", "value": "sluice.v1.Nope"})
    (schemas / "topics.yaml").write_text(yaml.safe_dump(topics))
    with pytest.raises(CatalogError, match=r"sluice\.v1\.Nope"):
        load_catalog(schemas)


def test_duplicate_topic_is_refused(tmp_path):
    schemas = copy_schemas(tmp_path)
    topics = yaml.safe_load((schemas / "topics.yaml").read_text())
    topics["topics"].append(dict(topics["topics"][0]))
    (schemas / "topics.yaml").write_text(yaml.safe_dump(topics))
    with pytest.raises(CatalogError, match="declared twice"):
        load_catalog(schemas)


def test_unknown_key_is_refused(tmp_path):
    schemas = copy_schemas(tmp_path)
    topics = yaml.safe_load((schemas / "topics.yaml").read_text())
    topics["defaults"]["partitons"] = 3
    (schemas / "topics.yaml").write_text(yaml.safe_dump(topics))
    with pytest.raises(CatalogError, match="partitons"):
        load_catalog(schemas)
