"""Every error Sluice raises on purpose, under one root.

``SluiceError`` is the root: the CLI catches it once and prints its message,
which says what to do next. Three families hang from it:

``ConfigurationError``: a file, setting or deployment is wrong (a catalog
that does not parse, a price that is negative, a missing jar). Fix it and run
again.

``TransientError``: the record is fine but something it needs is not (Triton
down, ClickHouse unreachable). The runner aborts the transaction, rewinds the
batch, pauses its partitions and retries with backoff; nothing is committed
and nothing is dropped.

``RecordError``: this record can never succeed as it is. The runner sends its
original bytes to the input topic's dead-letter topic and moves on. There is
one subclass per kind of dead letter, and its class name is exactly what the
``sluice.error.class`` header (and ClickHouse's ``dead_letters.error_class``)
carries, so the kinds are a closed, documented list rather than free strings.
All of them are declared here, in one place, so that ``sluice dlq show``, the
dashboards and the reference documentation can name every kind.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class SluiceError(Exception):
    """The root of every error Sluice raises on purpose; its message tells what to do."""


class ConfigurationError(SluiceError):
    """A file, setting or deployment is wrong; fixing it and running again is the cure."""


class TransientError(SluiceError):
    """A dependency is unavailable; retry the whole batch later."""


class RecordError(SluiceError):
    """A record that must go to the dead-letter topic, with the reason.

    Raise a subclass: its name is the dead-letter kind. ``stage`` defaults to
    the kind's usual stage. ``outputs`` are produced as well, in the same
    transaction: a processor that owes every input an answer (infer: one
    result per request) sends an error result downstream while the original
    waits in the DLQ for a replay.
    """

    #: Where in a processor this kind usually happens (the ``sluice.error.stage`` header).
    default_stage: ClassVar[str] = "process"

    def __init__(
        self,
        message: str,
        *,
        stage: str | None = None,
        details: Mapping[str, str] | None = None,
        outputs: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.stage = stage or self.default_stage
        self.message = message
        self.details = dict(details or {})
        self.outputs = list(outputs)

    @property
    def error_class(self) -> str:
        """The dead-letter kind: this class's name, as the ``sluice.error.class`` header says."""
        return type(self).__name__


def record_error_kinds() -> dict[str, type[RecordError]]:
    """Every dead-letter kind by name (the subclasses of ``RecordError`` that are loaded).

    Private classes (``_DecodeError``) only group kinds and are never raised: they
    are left out, their subclasses are not.
    """
    kinds: dict[str, type[RecordError]] = {}
    pending = list(RecordError.__subclasses__())
    while pending:
        kind = pending.pop()
        pending += kind.__subclasses__()
        if not kind.__name__.startswith("_"):
            kinds[kind.__name__] = kind
    return kinds


# -- decoding: the bytes are not a record of the topic's contract ------------------------
class _DecodeError(RecordError):
    default_stage = "deserialize"


class EmptyRecord(_DecodeError):
    """The record has no value (a tombstone) or an empty one."""

    default_stage = "parse"


class RecordTooLarge(_DecodeError):
    """The value is larger than the processor accepts."""

    default_stage = "parse"


class TruncatedRecord(_DecodeError):
    """Shorter than the 5-byte Confluent wire-format header."""


class UnknownMagicByte(_DecodeError):
    """Not in the Confluent wire format (the first byte is not 0)."""


class UnknownSchemaId(_DecodeError):
    """The schema id in the header is not one of the topic's: no version of its subject has it.

    The registry may not know the id at all, or know it under another subject (a
    producer framing its record with another topic's schema, or with one it
    registered itself): either way the record is refused before its schema is
    fetched or parsed.
    """


class SchemaTooComplex(_DecodeError):
    """The writer schema is larger, deeper or more recursive than a decoder accepts.

    The limits are ``SLUICE_REGISTRY__MAX_SCHEMA_BYTES`` and
    ``SLUICE_REGISTRY__MAX_SCHEMA_DEPTH``; a recursive schema (a named type that
    contains itself) is always refused, since its records can nest without end.
    """


class SchemaMismatch(_DecodeError):
    """Written with a schema that cannot be read as the topic's value schema."""


class CorruptAvro(_DecodeError):
    """The Avro body does not decode with its writer schema."""


class InvalidJson(_DecodeError):
    """The value (or a JSON field in it) is not valid JSON."""

    default_stage = "parse"


class InvalidUtf8(_DecodeError):
    """The value is not valid UTF-8 text."""

    default_stage = "parse"


class WrongDataset(_DecodeError):
    """A raw event that names another dataset than its topic's."""

    default_stage = "parse"


class NotARecord(_DecodeError):
    """The value decodes, but not to a record (an Avro or JSON object)."""

    default_stage = "parse"


# -- contracts -----------------------------------------------------------------------------
class ContractViolation(RecordError):
    """The record breaks a rule of its dataset's data contract (``details``: field and rule)."""

    default_stage = "contract"


class IncompleteDelete(RecordError):
    """A change-data-capture delete without the key fields its dataset needs."""

    default_stage = "contract"


# -- processing ------------------------------------------------------------------------------
class ProcessingFailed(RecordError):
    """The processor raised an unexpected exception on this record alone (``details``: its type)."""


class InvalidChunk(RecordError):
    """A streamed chunk that contradicts its stream (``processors.guard.stream_processor``).

    Keyed by another id than its request's, or of another tenant than its stream's first chunk.
    """


class OutputRejected(RecordError):
    """An output the processor made does not fit its topic's schema (``details``: the cause)."""

    default_stage = "serialize"


class BadSignal(RecordError):
    """drift cannot read a signal from the record (a value of the wrong type)."""

    default_stage = "drift"


class RowRejected(RecordError):
    """The sink cannot map the record onto its ClickHouse table, or ClickHouse refused the row."""

    default_stage = "transform"


class ImplausibleTimestamp(RecordError):
    """A record dated absurdly: before 2000, or further ahead of the reader's clock than allowed.

    meter dead-letters such a result instead of metering it: no producer's clock can
    open a billing period or a window in the far future (or the distant past). A
    result only slightly ahead is metered at its arrival instead (see
    ``processors.meter.state``).
    """

    default_stage = "process"


class UnverifiedVerdict(RecordError):
    """A request on ``inference.requests.safe`` that guard did not pass.

    Its signature header is missing or malformed, names a key infer does not hold,
    or does not verify (the value, key or topic changed after guard signed it); or it
    is signed but carries no verdict, or a verdict that is not ``pass`` or ``flag``.
    infer answers it with nothing (no result, no usage): whoever wrote it bypassed guard.
    """

    default_stage = "infer"


class UnauthenticatedRequest(RecordError):
    """A record on guard's input that no registered tenant's key proves.

    A request whose ``sluice.tenant.signature`` header is missing or malformed, names
    a key the tenant registry does not hold, or does not verify (the value, key or topic
    changed after the tenant signed it); or a model response for a tenant the registry
    no longer holds (guard cannot make its pseudonyms). Its tenant is unknown, so it is
    never metered, billed or attributed to anyone: it waits in the DLQ, original bytes
    kept, for a producer that signs.
    """

    default_stage = "authenticate"


# -- inference: the request is owed an error result as well -------------------------------
class _InferenceRefused(RecordError):
    default_stage = "infer"
    #: The machine-readable code the error result carries (``InferenceResult.error_code``).
    code: ClassVar[str] = ""


class UnknownModel(_InferenceRefused):
    """The request names a model the model catalog does not have."""

    code = "unknown_model"


class InputTooLong(_InferenceRefused):
    """The input has more tokens than the model accepts."""

    code = "input_too_long"


class InvalidRequest(_InferenceRefused):
    """The request lacks what its model's operation needs (say, a prompt for a generation)."""

    code = "invalid_request"


class BackendRejected(_InferenceRefused):
    """Triton refused this request (the model, not the server, said no)."""

    code = "backend_rejected"


# -- describing failures without the values that caused them ----------------------------
def value_free(exc: BaseException) -> str:
    """The class of ``exc`` and what went wrong, never the value it went wrong on.

    Library messages quote their input ("Invalid isoformat string: '…'", "'x' is
    not a valid int on field y", a ClickHouse parse error with the row's text), and
    a producer may have written personal data into the field at fault: what reaches
    a dead-letter header, a ClickHouse table or a log line is this instead. Only
    exceptions whose attributes are known to be value-free say more than their
    class (a decoding error's position and reason, a JSON error's kind and place).
    """
    name = type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        return f"{name} at byte {exc.start}: {exc.reason}"
    if isinstance(exc, json.JSONDecodeError):
        # The kind only: some kinds quote what they found after a colon ("Invalid \\escape: ").
        kind = exc.msg.split(":", 1)[0]
        return f"{name}: {kind} (line {exc.lineno}, column {exc.colno})"
    return name


def value_free_traceback(exc: BaseException) -> str:
    """Where ``exc`` was raised (file, line, code) and its class, without its message.

    What a log line needs to find a bug, and nothing a record put in the message.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    return f"Traceback (most recent call last):\n{frames}{value_free(exc)}"


def inference_refusal(code: str) -> type[RecordError]:
    """The dead-letter kind of an inference error code."""
    for kind in _InferenceRefused.__subclasses__():
        if kind.code == code:
            return kind
    raise KeyError(f"no dead-letter kind for inference error code {code!r}")
