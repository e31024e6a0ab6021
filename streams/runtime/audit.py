"""The audit trail: one ``sluice.v1.AuditEvent`` on ``audit.events`` per operator action.

Commands that change a deployment (``sluice schemas apply``, ``dlq replay``, ``connect
apply|delete``, ``drift reset``, ``acl apply``, ``tenants add|rotate``) record what they
did, to what, by whom, from which host and how it ended. The event is produced
synchronously (flushed and acknowledged by every in-sync replica) before the command
reports its outcome, so an action the operator saw succeed is on the trail. An action
whose event cannot be written fails with ``AuditUnavailableError``: an operator action
that cannot be audited must not look like a success. ``Auditor`` checks that it can
write (the topic exists, the schema is registered) before the action starts, so that
failure is almost always raised before anything changed.

Details are counts and names only. They are cut to a bounded length, any key that
names a secret has its value replaced, and URLs lose their password: an event never
carries a record's payload or a secret.
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Literal, Protocol

from confluent_kafka import KafkaError, Message

from streams.contracts.catalog import Catalog
from streams.contracts.records import AuditEvent, new_id, utcnow
from streams.contracts.serde import AvroSerde
from streams.errors import SluiceError
from streams.runtime import kafka
from streams.settings import Settings, without_password

log = logging.getLogger(__name__)

AUDIT_TOPIC = "audit.events"
#: Every action the command line records (the event's key and its ``action`` column).
ACTIONS = frozenset(
    {
        "schemas.apply",
        "dlq.replay",
        "connect.apply",
        "connect.delete",
        "drift.reset",
        "acl.apply",
        "tenants.add",
        "tenants.rotate",
        "tenants.retire",
        "keys.create",
        "keys.revoke",
    }
)
Outcome = Literal["ok", "failed"]

# A detail value is a count or a name; a longer one is cut, so no free text fits in it.
MAX_DETAIL_CHARS = 200
MAX_DETAILS = 32
_KEY = re.compile(r"[a-z][a-z0-9_.]{0,63}")
_SECRET_KEY = re.compile(r"pass|secret|token|credential|api_?key|private|auth", re.IGNORECASE)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_REDACTED = "***"


class AuditUnavailableError(SluiceError):
    """The audit event of an operator action could not be written to ``audit.events``."""


class _Producer(Protocol):
    """What the auditor needs of confluent-kafka's Producer (a test hands in a fake)."""

    def produce(self, topic: str, *args: Any, **kwargs: Any) -> None: ...

    def flush(self, timeout: float) -> int: ...


def actor(settings: Settings) -> str:
    """Who is acting: the OS user, and ``/<sasl user>`` when Kafka SASL is configured.

    Until operators authenticate to Sluice itself this is the best identity the
    command line has; the SASL username is the principal the cluster itself saw.
    """
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid:{os.getuid()}"
    sasl = settings.kafka.options.get("sasl.username")
    return f"{user}/{sasl}" if sasl else user


def sluice_version() -> str:
    """The installed sluice package's version."""
    try:
        return metadata.version("sluice")
    except metadata.PackageNotFoundError:
        return "unknown"


def clean_details(details: Mapping[str, object]) -> dict[str, str]:
    """``details`` as they may be stored: bounded, secret-free, strings only.

    Keys are short identifiers (a key that is not one is a bug in the caller, and
    refused). Values are cut to ``MAX_DETAIL_CHARS``; a key that names a secret
    keeps ``***`` instead of its value; URLs lose their password.
    """
    if len(details) > MAX_DETAILS:
        raise ValueError(f"an audit event carries at most {MAX_DETAILS} details")
    cleaned = {}
    for key, value in details.items():
        if not _KEY.fullmatch(key):
            raise ValueError(f"audit detail key {key!r} is not a short lower-case identifier")
        if _SECRET_KEY.search(key):
            cleaned[key] = _REDACTED
            continue
        text = _URL.sub(lambda m: without_password(m.group()), str(value))
        if len(text) > MAX_DETAIL_CHARS:
            text = text[: MAX_DETAIL_CHARS - 1] + "…"
        cleaned[key] = text
    return cleaned


class Auditor:
    """Writes the audit events of one command; built before the action it records.

    Building it checks that an event can be written at all (the audit topic exists
    and its schema is registered), so a command refuses to act rather than act
    without a trail. ``record`` then produces one event and waits for it.
    """

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        *,
        producer: _Producer | None = None,
        encode: Callable[[Mapping[str, Any]], bytes] | None = None,
        timeout_s: float = 15.0,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.timeout_s = timeout_s
        self.topic = catalog.physical(AUDIT_TOPIC)
        try:
            if encode is None:
                encode = AvroSerde(kafka.registry(settings), catalog).encoder(AUDIT_TOPIC)
            if producer is None:
                missing = kafka.missing_topics(kafka.admin(settings), [self.topic], timeout_s)
                if missing:
                    raise AuditUnavailableError(
                        f"the audit topic {self.topic} does not exist; run `sluice schemas "
                        "apply` first (it creates the topic, and records itself there)"
                    )
                # A bounded delivery timeout: an unreachable cluster fails the command
                # within seconds instead of librdkafka's five minutes.
                producer = kafka.producer(
                    settings, **{"message.timeout.ms": int(timeout_s * 1000), "linger.ms": 0}
                )
        except AuditUnavailableError:
            raise
        except Exception as exc:
            raise AuditUnavailableError(
                f"cannot write to the audit topic {self.topic}: {_reason(exc)}; operator "
                "actions are refused while they cannot be audited"
            ) from exc
        self.encode = encode
        self.producer: _Producer = producer
        self.actor = actor(settings)
        self.host = socket.gethostname()
        self.version = sluice_version()

    def record(
        self,
        action: str,
        target: str,
        outcome: Outcome,
        details: Mapping[str, object] | None = None,
    ) -> AuditEvent:
        """Produce one event and wait for Kafka to acknowledge it (else AuditUnavailableError)."""
        if action not in ACTIONS:
            known = ", ".join(sorted(ACTIONS))
            raise ValueError(f"unknown audit action {action!r}; known: {known}")
        event = AuditEvent(
            event_id=new_id(),
            occurred_at=utcnow(),
            actor=self.actor,
            host=self.host,
            action=action,
            target=without_password(target),
            outcome=outcome,
            details=clean_details(details or {}),
            sluice_version=self.version,
        )
        errors: list[str] = []
        done = threading.Event()

        def delivered(error: KafkaError | None, _message: Message | None) -> None:
            if error is not None:
                errors.append(error.str())
            done.set()

        try:
            self.producer.produce(
                self.topic, self.encode(event.to_avro()), key=action, on_delivery=delivered
            )
            remaining = self.producer.flush(self.timeout_s + 5)
        except Exception as exc:
            errors.append(_reason(exc))
        else:
            if remaining or not done.is_set():
                errors.append(f"not acknowledged within {self.timeout_s + 5:.0f}s")
        if errors:
            raise AuditUnavailableError(
                f"{action} of {event.target} ended {outcome}, but its audit event could not "
                f"be written to {self.topic}: {errors[0]}. The action is not on the audit "
                "trail: check the cluster, then record it by hand or run it again"
            )
        log.info("audit: %s %s %s by %s", action, event.target, outcome, event.actor)
        return event


def record(  # noqa: PLR0917 (the trail's own vocabulary: who records what, how it ended)
    settings: Settings,
    catalog: Catalog,
    action: str,
    target: str,
    outcome: Outcome,
    details: Mapping[str, object] | None = None,
) -> AuditEvent:
    """Produce one audit event synchronously (a one-off ``Auditor``)."""
    return Auditor(settings, catalog).record(action, target, outcome, details)


@contextmanager
def audited(
    auditor: Auditor | Callable[[], Auditor], action: str, target: str
) -> Iterator[dict[str, object]]:
    """Record the action of the ``with`` block: ``ok``, or ``failed`` with the error's class.

    The block fills the yielded dict with its details (counts, names). ``auditor`` is
    an ``Auditor`` built before the action, or a function that builds one after it
    (``schemas apply`` creates the audit topic itself). A block that raises is
    recorded as failed and its error propagates; if that record cannot be written
    either, the log says so and the block's own error is still the one raised.
    """
    if action not in ACTIONS:  # before the action: never act and then fail to record it
        raise ValueError(f"unknown audit action {action!r}; add it to ACTIONS")
    details: dict[str, object] = {}
    try:
        yield details
    except BaseException as exc:
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            _finish(auditor, action, target, "ok", details)
            raise
        details["error_class"] = type(exc).__name__
        try:
            _finish(auditor, action, target, "failed", details)
        except AuditUnavailableError as audit_error:
            log.error("%s", audit_error)
            exc.add_note(str(audit_error))
        raise
    _finish(auditor, action, target, "ok", details)


def _finish(
    auditor: Auditor | Callable[[], Auditor],
    action: str,
    target: str,
    outcome: Outcome,
    details: Mapping[str, object],
) -> None:
    built = auditor if isinstance(auditor, Auditor) else auditor()
    built.record(action, target, outcome, details)


def _reason(exc: BaseException) -> str:
    """An error's class and message, with any URL's password hidden."""
    text = _URL.sub(lambda m: without_password(m.group()), str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
