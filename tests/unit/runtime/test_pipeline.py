"""The runner's batch path, in process: decode, process, isolate, roll back, encode, dead-letter.

Toy processors over ``inference.requests`` → ``inference.requests.safe`` (the same
schema both ways) drive ``streams.runtime.testing.Harness``, which runs the very
``BatchPipeline`` the runner runs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams.contracts.catalog import catalog_for
from streams.errors import ConfigurationError, NotARecord, TransientError
from streams.runtime.pipeline import BatchPipeline
from streams.runtime.spec import Context, InputRecord, Outcome, Output, ProcessorSpec, per_record
from streams.runtime.testing import Harness
from streams.settings import Settings

IN = "inference.requests"
OUT = "inference.requests.safe"


def request(request_id: str, text: str = "hello") -> dict[str, Any]:
    return {
        "request_id": request_id,
        "tenant_id": "acme",
        "model": "minilm",
        "input_text": text,
        "created_at": 1_700_000_000_000,
    }


class ToySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLUICE_TOY__", frozen=True, extra="ignore")
    poison: str = "poison"
    builds: int = 0


@dataclass
class Counter:
    """In-memory state: how many requests were counted, with its last committed value."""

    counted: list[str] = field(default_factory=list)
    committed: list[str] = field(default_factory=list)
    rollbacks: int = 0


ToyContext = Context[ToySettings, Counter]


def _counting_batch(records: Sequence[InputRecord], ctx: ToyContext) -> list[Outcome]:
    """Counts every request; raises (for the whole batch) if one of them is poison."""
    outcomes: list[Outcome] = []
    for record in records:
        ctx.resources.counted.append(record.value["request_id"])
        if record.value["input_text"] == ctx.config.poison:
            raise ValueError("cannot handle this text")
        outcomes.append([Output(OUT, record.value, key=record.value["request_id"])])
    return outcomes


def _rollback(ctx: ToyContext) -> None:
    ctx.resources.counted = list(ctx.resources.committed)
    ctx.resources.rollbacks += 1


def _commit(ctx: ToyContext) -> None:
    ctx.resources.committed = list(ctx.resources.counted)


def counting_spec(*, with_rollback: bool = True) -> ProcessorSpec[ToySettings, Counter]:
    return ProcessorSpec(
        name="toy",
        description="counts requests",
        settings=ToySettings,
        inputs=lambda catalog, settings: [IN],
        outputs=lambda catalog, settings: [OUT],
        process_batch=_counting_batch,
        setup=lambda ctx: Counter(),
        after_commit=_commit,
        rollback=_rollback if with_rollback else None,
    )


def stateless_spec(name: str, process_batch: Any) -> ProcessorSpec[Any, Any]:
    """A processor without settings or state over ``IN`` → ``OUT``."""
    return ProcessorSpec(
        name=name,
        description="",
        inputs=lambda c, s: [IN],
        outputs=lambda c, s: [OUT],
        process_batch=process_batch,
    )


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def test_outputs_are_encoded_with_the_topic_schema_and_decoded_back(settings: Settings) -> None:
    with Harness(counting_spec(), settings=settings) as harness:
        out = harness.run([harness.record(IN, request("r1")), harness.record(IN, request("r2"))])
    assert [v["request_id"] for v in out.values(OUT)] == ["r1", "r2"]
    assert out.on(OUT)[0].raw[0] == 0  # the Confluent wire format's magic byte
    assert out.dead_letters == []


def test_a_batch_that_raises_is_rerun_record_by_record(settings: Settings) -> None:
    """Only the record that makes the processor raise is dead-lettered; its neighbours go on."""
    with Harness(counting_spec(), settings=settings) as harness:
        records = [
            harness.record(IN, request("r1")),
            harness.record(IN, request("r2", "poison")),
            harness.record(IN, request("r3")),
        ]
        out = harness.run(records)
        state = harness.ctx.resources
    assert [v["request_id"] for v in out.values(OUT)] == ["r1", "r3"]
    assert out.kinds() == ["ProcessingFailed"]
    letter = out.dead_letters[0]
    assert letter.topic == "inference.requests.dlq"
    assert letter.raw == records[1].raw  # the original bytes, untouched
    assert letter.info.details == {"exception": "ValueError"}
    assert (letter.info.processor, letter.info.stage, letter.info.offset) == ("toy", "process", 1)
    # The state holds each good record once: rolled back before the re-run, and again
    # after the poison, with the good records before it applied anew.
    assert state.counted == ["r1", "r3"] == state.committed
    assert state.rollbacks == 2


def test_without_a_rollback_hook_a_stateless_processor_is_simply_rerun(settings: Settings) -> None:
    with Harness(counting_spec(with_rollback=False), settings=settings) as harness:
        out = harness.run(
            [harness.record(IN, request("a", "poison")), harness.record(IN, request("b"))]
        )
    assert out.kinds() == ["ProcessingFailed"]
    assert out.values(OUT)[0]["request_id"] == "b"


def test_an_aborted_batch_rolls_state_back_to_the_last_commit(settings: Settings) -> None:
    with Harness(counting_spec(), settings=settings) as harness:
        harness.run([harness.record(IN, request("r1"))])
        harness.run_aborted([harness.record(IN, request("r2"))])
        assert harness.ctx.resources.counted == ["r1", "r2"]
        harness.abort()
        assert harness.ctx.resources.counted == ["r1"]


def test_undecodable_bytes_are_dead_lettered_with_their_kind(settings: Settings) -> None:
    with Harness(counting_spec(), settings=settings) as harness:
        out = harness.run(
            [
                harness.record(IN, b"not avro at all", key=b"k"),
                harness.record(IN, b"\x00\x00\x00"),
                harness.record(IN, request("ok")),
            ]
        )
    assert out.kinds() == ["UnknownMagicByte", "TruncatedRecord"]
    assert out.dead_letters[0].raw == b"not avro at all" and out.dead_letters[0].key == b"k"
    assert [v["request_id"] for v in out.values(OUT)] == ["ok"]


def test_an_output_that_does_not_fit_its_schema_dead_letters_its_input(settings: Settings) -> None:
    def broken(record: InputRecord, ctx: Context[Any, Any]) -> list[Output]:
        return [Output(OUT, {"request_id": record.value["request_id"]})]  # fields missing

    spec = stateless_spec("broken", per_record(broken))
    with Harness(spec, settings=settings) as harness:
        out = harness.run([harness.record(IN, request("x"))])
    assert out.kinds() == ["OutputRejected"]
    assert out.dead_letters[0].info.stage == "serialize"
    assert out.produced == []


def test_a_record_error_is_a_dead_letter_and_its_owed_outputs_still_go_out(
    settings: Settings,
) -> None:
    def refuse(record: InputRecord, ctx: Context[Any, Any]) -> list[Output]:
        raise NotARecord(
            "refused on purpose",
            details={"why": "test"},
            outputs=[Output(OUT, record.value, key="owed")],
        )

    spec = stateless_spec("refuser", per_record(refuse))
    with Harness(spec, settings=settings) as harness:
        out = harness.run([harness.record(IN, request("y"))])
    assert out.kinds() == ["NotARecord"]
    assert out.dead_letters[0].info.message == "refused on purpose"
    assert out.dead_letters[0].info.details == {"why": "test"}
    assert [p.key for p in out.on(OUT)] == [b"owed"]


def test_a_transient_error_is_never_isolated_per_record(settings: Settings) -> None:
    def unavailable(records: Sequence[InputRecord], ctx: Context[Any, Any]) -> list[Outcome]:
        raise TransientError("Triton is down")

    spec = stateless_spec("waiting", unavailable)
    with Harness(spec, settings=settings) as harness, pytest.raises(TransientError):
        harness.run([harness.record(IN, request("z")), harness.record(IN, request("w"))])


def test_settings_are_built_once_and_handed_to_setup_and_every_call(settings: Settings) -> None:
    seen: list[ToySettings] = []

    def setup(ctx: Context[ToySettings, None]) -> Counter:
        seen.append(ctx.config)
        return Counter()

    def process(record: InputRecord, ctx: ToyContext) -> list[Output]:
        seen.append(ctx.config)
        return []

    spec = ProcessorSpec(
        name="toy",
        description="",
        settings=ToySettings,
        inputs=lambda catalog, config: [IN] if config.poison == "custom" else [],
        outputs=lambda catalog, config: [OUT],
        process_batch=per_record(process),
        setup=setup,
    )
    config = ToySettings(poison="custom")
    with Harness(spec, settings=settings, config=config) as harness:
        harness.run([harness.record(IN, request("1")), harness.record(IN, request("2"))])
        assert harness.pipeline.inputs == [IN]
    assert len(seen) == 3 and all(s is config for s in seen)


def test_an_input_without_a_dead_letter_topic_is_refused_at_start(settings: Settings) -> None:
    catalog = catalog_for(settings)
    no_dlq = next(name for name, spec in catalog.topics.items() if spec.dlq_topic is None)
    spec: ProcessorSpec[Any, Any] = ProcessorSpec(
        name="careless",
        description="",
        inputs=lambda c, s: [no_dlq] if not no_dlq.endswith(".dlq") else ["no.such.topic"],
        outputs=lambda c, s: [],
        process_batch=per_record(lambda r, c: []),
    )
    with pytest.raises(ConfigurationError, match="dead-letter topic"):
        Harness(spec, settings=settings)


def test_dead_letters_of_prompts_are_stored_encrypted(settings: Settings) -> None:
    with Harness(counting_spec(), settings=settings) as harness:
        poison = harness.record(IN, request("r9", "poison"))
        out = harness.run([poison])
    [letter] = out.dead_letters
    assert letter.topic == "inference.requests.dlq"
    assert letter.key_id is not None
    assert letter.raw == poison.raw  # opens to the original bytes
    assert letter.stored != poison.raw and b"poison" not in letter.stored


def test_a_processor_of_prompts_needs_the_dead_letter_key(settings: Settings) -> None:
    assert settings.dead_letters.encryption_key is None
    spec = counting_spec()
    ctx: Context[Any, Any] = Context(
        processor="toy",
        settings=settings,
        config=ToySettings(),
        catalog=catalog_for(settings),
        logger=logging.getLogger("toy"),
        serde=None,  # type: ignore[arg-type]
        resources=None,
        instance_id="t",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"toy may dead-letter records to inference\.requests\.dlq.*"
        r"SLUICE_DEAD_LETTERS__ENCRYPTION_KEY is not set",
    ):
        BatchPipeline(spec, ctx, group_id="g")


SECRET_VALUE = "zelda.quixote7731@example.org"


def test_a_raising_processor_leaves_its_message_out_of_dead_letters_and_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """The exception's message quotes the record; only its class and place are kept."""

    def quoting(records: Sequence[InputRecord], ctx: Context[Any, Any]) -> list[Outcome]:
        for record in records:
            if "@" in record.value["input_text"]:
                raise ValueError(f"cannot handle {record.value['input_text']!r}")
        return [[] for _ in records]

    def wrong_output(record: InputRecord, ctx: Context[Any, Any]) -> list[Output]:
        return [Output(OUT, {**record.value, "max_tokens": record.value["input_text"]})]

    with caplog.at_level("DEBUG"):
        with Harness(stateless_spec("quoting", quoting), settings=settings) as harness:
            raised = harness.run(
                [harness.record(IN, request("a", SECRET_VALUE)), harness.record(IN, request("b"))]
            )
        with Harness(stateless_spec("wrong", per_record(wrong_output)), settings=settings) as h:
            rejected = h.run([h.record(IN, request("c", SECRET_VALUE))])
    assert raised.kinds() == ["ProcessingFailed"] and rejected.kinds() == ["OutputRejected"]
    letters = raised.dead_letters + rejected.dead_letters
    assert letters[0].info.message == "quoting raised ValueError on this record"
    assert letters[1].info.message.endswith("does not fit its schema: ValueError")
    for letter in letters:
        assert all(SECRET_VALUE not in (v or b"").decode() for _, v in letter.headers)
    assert "test_pipeline.py" in caplog.text  # where it was raised is still logged
    assert SECRET_VALUE not in caplog.text


class RecordingSigner:
    """Signs with a checksum of what it is given, and remembers it."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes | None, bytes]] = []

    def headers(self, topic: str, key: bytes | None, value: bytes) -> list[tuple[str, bytes]]:
        self.seen.append((topic, key, value))
        return [("toy.signature", str(hash((topic, key, value))).encode())]


def test_declared_outputs_are_signed_over_the_bytes_produced_and_nothing_else() -> None:
    signer = RecordingSigner()

    def echo(records: Sequence[InputRecord], ctx: Context[Any, Any]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for record in records:
            if record.value["input_text"] == "refuse":
                outcomes.append(NotARecord("refused"))
                continue
            value, key = record.value, record.value["request_id"]
            outcomes.append([Output(OUT, value, key=key), Output(IN, value, key=key)])
        return outcomes

    spec: ProcessorSpec[Any, Any] = ProcessorSpec(
        name="signing",
        description="signs its outputs to OUT",
        inputs=lambda catalog, settings: [IN],
        outputs=lambda catalog, settings: [OUT, IN],
        process_batch=echo,
        signers=lambda settings: {OUT: signer},
    )
    with Harness(spec, settings=Settings()) as harness:
        traced = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01")]
        out = harness.run(
            [
                harness.record(IN, request("r1"), headers=traced),
                harness.record(IN, request("r2", "refuse")),
            ]
        )
    [signed] = out.on(OUT)
    assert signer.seen == [(OUT, b"r1", signed.raw)]  # the logical name, the exact bytes
    assert signed.headers[-1][0] == "toy.signature", "signed last, after the trace headers"
    assert [name for name, _ in signed.headers].count("toy.signature") == 1
    [unsigned] = out.on(IN)
    assert all(name != "toy.signature" for name, _ in unsigned.headers)
    [letter] = out.dead_letters
    assert all(name != "toy.signature" for name, _ in letter.headers)


def test_a_signer_that_cannot_be_built_fails_at_start() -> None:
    def no_key(settings: Any) -> dict[str, RecordingSigner]:
        raise ConfigurationError("SLUICE_TOY__KEY is not set")

    spec: ProcessorSpec[Any, Any] = ProcessorSpec(
        name="signing",
        description="cannot sign",
        inputs=lambda catalog, settings: [IN],
        outputs=lambda catalog, settings: [OUT],
        process_batch=lambda records, ctx: [],
        signers=no_key,
    )
    with pytest.raises(ConfigurationError, match="SLUICE_TOY__KEY"):
        Harness(spec, settings=Settings())
