"""The two ways a record can fail, and how the runner treats each.

``RecordError``: this record can never succeed as it is (bad bytes, a broken
contract rule, a model that does not exist). The runner sends its original
bytes to the input topic's dead-letter topic and moves on.

``TransientError``: the record is fine but something it needs is not (Triton
down, ClickHouse unreachable). The runner aborts the transaction, rewinds the
batch, pauses its partitions and retries with backoff; nothing is committed
and nothing is dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class RecordError(Exception):
    """A record that must go to the dead-letter topic, with the reason.

    ``outputs`` are produced as well, in the same transaction: a processor that
    owes every input an answer (infer: one result per request) sends an error
    result downstream while the original waits in the DLQ for a replay.
    """

    def __init__(
        self,
        stage: str,
        message: str,
        *,
        error_class: str | None = None,
        details: Mapping[str, str] | None = None,
        outputs: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.message = message
        self.error_class = error_class or type(self).__name__
        self.details = dict(details or {})
        self.outputs = list(outputs)


class TransientError(Exception):
    """A dependency is unavailable; retry the whole batch later."""
