"""An in-memory stand-in for the audit trail, for command-line unit tests."""

from __future__ import annotations

from typing import Any

from streams.runtime.audit import ACTIONS, AuditUnavailableError


class Recorded:
    """A stand-in ``Auditor`` that keeps the events in memory (serde and Kafka are tested
    in tests/unit/runtime/test_audit.py).

    It is its own factory: ``Auditor(settings, catalog)`` in a command, and ``audited``
    calling what it was given, both return it.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str, dict[str, str]]] = []
        self.built = 0
        self.unavailable = False

    def __call__(self, *_args: Any, **_kwargs: Any) -> Recorded:
        self.built += 1
        if self.unavailable:
            raise AuditUnavailableError("cannot write to the audit topic audit.events: down")
        return self

    def record(self, action: str, target: str, outcome: str, details: Any = None) -> None:
        # The real Auditor refuses an action it does not know: so does the stand-in, or a
        # command could pass its unit tests and fail on the real trail.
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        self.events.append((action, target, outcome, {k: str(v) for k, v in details.items()}))
