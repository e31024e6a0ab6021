"""Signed requests for tests that write to ``inference.requests.safe`` themselves.

infer serves only what guard signed; a test that stands in for guard signs with the
same key guard would: the local stack's (``sluice up`` makes it, and so does this
helper when the stack predates it), or a throwaway pair for unit tests.
"""

from __future__ import annotations

import dataclasses
from functools import cache

from streams.contracts.records import GuardVerdict, InferenceRequest, utcnow
from streams.runtime.signing import Signer, new_keypair
from streams.runtime.spec import Headers
from streams.settings import Settings
from streams.stack.secrets import ensure_verdict_keys, verdict_key_paths

SAFE = "inference.requests.safe"


@cache
def unit_keypair() -> tuple[str, str]:
    """A (private, public) keypair for unit tests, the same for the whole run."""
    return new_keypair()


def signed_headers(
    settings: Settings, topic: str, key: bytes | str | None, value: bytes
) -> Headers:
    """The headers guard would put on this record, signed with the local stack's key.

    ``topic`` is the logical name (what guard signs), not the physical one.
    """
    ensure_verdict_keys(settings)
    private = verdict_key_paths(settings)[0].read_text(encoding="ascii").strip()
    raw_key = key.encode() if isinstance(key, str) else key
    return Signer.from_secret(private, "the local stack's verdict key").headers(
        topic, raw_key, value
    )


def signed_with(private: str, topic: str, key: bytes | str | None, value: bytes) -> Headers:
    """The signature headers of this record under ``private`` (a unit test's own key)."""
    raw_key = key.encode() if isinstance(key, str) else key
    return Signer.from_secret(private, "a test key").headers(topic, raw_key, value)


def passed(request: InferenceRequest, action: str = "pass") -> InferenceRequest:
    """``request`` with the verdict guard gives a clean prompt (infer serves no other)."""
    verdict = GuardVerdict(
        policy_version="test", action=action, redacted=False, checked_at=utcnow()
    )
    return dataclasses.replace(request, guard=verdict)
