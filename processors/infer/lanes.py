"""Which lane owns a record of ``inference.requests.safe``, read from its bytes cheaply.

Every lane reads every record, so telling another lane's record apart must cost
little: the model name is read straight from the Avro body (the writer schema puts
it third, after two strings) by skipping the fields before it, without decoding the
prompt (``streams.contracts.peek``). Whatever that cannot read (a writer schema with
something harder to skip before ``model``, bytes that do not parse) makes the record
the default lane's, which
decodes it fully and serves or dead-letters it. The rule depends only on the bytes
and the writer schema, so every lane comes to the same owner: a request is served,
refused or dead-lettered by exactly one lane.
"""

from __future__ import annotations

import dataclasses

from streams.contracts.catalog import Catalog
from streams.contracts.peek import FieldPeek
from streams.contracts.serde import AvroSerde
from streams.errors import RecordError
from streams.llm.model_catalog import DEFAULT_LANE, ModelCatalog
from streams.runtime.spec import InputRecord, Outcome

#: The field that names a request's model.
MODEL_FIELD = "model"


def model_peek() -> FieldPeek:
    """A reader of requests' model names; one per process (it caches plans)."""
    return FieldPeek(MODEL_FIELD)


def in_lane(
    record: InputRecord,
    *,
    lane: str,
    models: ModelCatalog,
    topics: Catalog,
    serde: AvroSerde,
    peek: FieldPeek,
) -> InputRecord | Outcome:
    """``record`` decoded when ``lane`` owns it; otherwise what this lane owes it.

    Another lane's record is owed nothing here: an empty outcome (committed, nothing
    written). The owner is the lane of the model read from the bytes, or the default
    lane when it cannot be read; only the owner decodes the record fully, and only the
    owner dead-letters a record that then does not decode.
    """
    try:
        schema_id, writer = serde.check_writer(record.raw, topic=record.topic)
    except RecordError as error:
        return error if lane == DEFAULT_LANE else []
    raw = record.raw or b""
    named = peek.value_of(raw, schema_id, writer)
    owner = DEFAULT_LANE if named is None else models.lane_of(named)
    if owner != lane:
        return []
    try:
        value = serde.decode(raw, topics.value_schema(record.topic), topic=record.topic)
    except RecordError as error:
        return error
    return dataclasses.replace(record, value=value)
