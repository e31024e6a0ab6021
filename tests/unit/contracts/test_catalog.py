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
    assert catalog.topic("raw.support_tickets.dlq").configs["retention.ms"] == "2592000000"


def test_retention_comes_from_the_data_class():
    catalog = load_catalog(SCHEMAS)
    hours = 3_600_000
    for name in ("inference.requests", "inference.responses"):
        assert catalog.topic(name).configs["retention.ms"] == str(6 * hours)
    assert catalog.topic("inference.requests").data_class == "raw_prompt"
    assert catalog.topic("inference.requests.safe").data_class == "redacted_prompt"
    assert int(catalog.topic("inference.requests.safe").configs["retention.ms"]) > 6 * hours
    # A topic's own retention_ms still wins over its class's.
    assert catalog.topic("drift.alerts").data_class == "metrics"
    assert catalog.topic("drift.alerts").configs["retention.ms"] == "7776000000"
    assert catalog.topic("metering.usage").configs["retention.ms"] == "604800000"


def test_dead_letters_of_prompts_are_encrypted_and_short_lived():
    catalog = load_catalog(SCHEMAS)
    for topic in ("inference.requests", "inference.requests.safe", "inference.responses"):
        dlq = catalog.topic(f"{topic}.dlq")
        assert dlq.data_class == "sealed_dead_letter"
        assert dlq.encrypted and catalog.encrypted_dead_letters(topic)
        assert dlq.configs["retention.ms"] == str(24 * 3_600_000)
    assert not catalog.encrypted_dead_letters("raw.support_tickets")
    assert not catalog.topic("raw.support_tickets.dlq").encrypted
    assert catalog.topic("raw.support_tickets").data_class == "raw_dataset"
    assert catalog.topic("support_tickets.validated").data_class == "validated_dataset"


def test_every_topic_has_a_known_class():
    catalog = load_catalog(SCHEMAS)
    for spec in catalog.topics.values():
        assert spec.data_class in catalog.data_classes, spec.logical


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


def _edit(tmp_path, change):
    schemas = copy_schemas(tmp_path)
    topics = yaml.safe_load((schemas / "topics.yaml").read_text())
    change(topics)
    (schemas / "topics.yaml").write_text(yaml.safe_dump(topics))
    return schemas


def test_a_topic_without_a_class_is_refused(tmp_path):
    schemas = _edit(tmp_path, lambda t: t["topics"][0].pop("data_class"))
    with pytest.raises(CatalogError, match=r"'inference\.requests' has no data class"):
        load_catalog(schemas)


def test_an_unknown_class_is_refused(tmp_path):
    schemas = _edit(tmp_path, lambda t: t["topics"][0].update(data_class="prompts"))
    with pytest.raises(CatalogError, match=r"unknown data class 'prompts'.*known: audit"):
        load_catalog(schemas)


def test_a_dataset_without_classes_is_refused(tmp_path):
    schemas = _edit(tmp_path, lambda t: t["datasets"]["support_tickets"].pop("raw_class"))
    with pytest.raises(CatalogError, match=r"'raw\.support_tickets' has no data class"):
        load_catalog(schemas)


def test_an_unknown_dead_letter_class_is_refused(tmp_path):
    schemas = _edit(tmp_path, lambda t: t["data_classes"]["raw_prompt"].update(dead_letters="nope"))
    with pytest.raises(CatalogError, match=r"'raw_prompt' sends its dead letters.*'nope'"):
        load_catalog(schemas)


def test_a_table_of_an_unknown_class_is_refused(tmp_path):
    schemas = _edit(tmp_path, lambda t: t["tables"].update(requests="nope"))
    with pytest.raises(CatalogError, match=r"table 'requests' names the unknown data class"):
        load_catalog(schemas)


def test_a_class_without_retention_needs_the_topic_to_have_one(tmp_path):
    def change(t):
        t["topics"][0]["data_class"] = "request_metadata"

    with pytest.raises(CatalogError, match=r"'inference\.requests' has no retention"):
        load_catalog(_edit(tmp_path, change))
