"""Which records of a partition are done, when they are not done in offset order.

A runner that schedules fairly (``streams.runtime.fair_window``) finishes the records
of one partition out of order: tenant B's request at offset 5,020 may be committed
while tenant A's at offset 17 still waits its turn. A Kafka offset commit says only
"everything below N is done", so each partition's commit carries two things, in the
same transaction as the outputs of the batch (exactly once, as before):

* the **commit point**: the lowest offset not done yet (the consumer of a new owner
  starts there), and
* in the offset's **metadata**, which offsets above it are done already, so that a
  replica that takes the partition over (or this one, after a crash or a rewind) skips
  them when it reads them again instead of producing their outputs twice.

This is the technique of Confluent's Parallel Consumer (its offset map in the commit
metadata). The metadata is a bitmap relative to the commit point, zlib-compressed and
base64-encoded, prefixed with its format; a partition may run at most ``MAX_SPAN``
offsets ahead of its commit point, which keeps the metadata within the broker's
``offset.metadata.max.bytes`` (4096 by default) whatever the pattern of done records.

Offsets are not contiguous record numbers: transaction markers and aborted records
take offsets too and are never delivered. The commit point is therefore the offset of
the first pending record, or, when nothing is pending, the offset after the last
record read.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections import deque
from collections.abc import Iterable

from streams.errors import SluiceError

#: Most offsets a partition's done records may run ahead of its commit point: a
#: bitmap of 16,384 bits is 2 KiB, 2.7 KiB in base64, under the broker's 4 KiB default.
MAX_SPAN = 16_384
#: The metadata format's prefix; anything else is not ours (an older commit, another tool).
PREFIX = "sluice-done-v1:"


class MetadataError(SluiceError, ValueError):
    """Commit metadata that is not a done-offsets map this runner can read."""


def encode_done(commit_point: int, done: Iterable[int]) -> str:
    """The metadata naming ``done`` offsets (all above ``commit_point``); "" when none."""
    relative = sorted(offset - commit_point for offset in done)
    if not relative:
        return ""
    if relative[0] <= 0 or relative[-1] >= MAX_SPAN:
        raise ValueError(f"done offsets must lie in (commit point, commit point + {MAX_SPAN})")
    bitmap = bytearray(relative[-1] // 8 + 1)
    for bit in relative:
        bitmap[bit // 8] |= 1 << (bit % 8)
    return PREFIX + base64.b64encode(zlib.compress(bytes(bitmap), 9)).decode("ascii")


def decode_done(commit_point: int, metadata: str | None) -> set[int]:
    """The done offsets ``metadata`` names above ``commit_point``; ``MetadataError`` if unreadable.

    Empty or absent metadata is a plain commit (nothing done beyond it). The size is
    bounded before anything is inflated, so a corrupt commit cannot exhaust memory.
    """
    if not metadata:
        return set()
    if not metadata.startswith(PREFIX):
        raise MetadataError("the commit metadata is not a done-offsets map")
    try:
        packed = base64.b64decode(metadata[len(PREFIX) :], validate=True)
        inflater = zlib.decompressobj()
        bitmap = inflater.decompress(packed, MAX_SPAN // 8 + 1)
    except (binascii.Error, zlib.error) as exc:
        raise MetadataError(f"the done-offsets map does not decode: {exc}") from exc
    if inflater.unconsumed_tail or len(bitmap) > MAX_SPAN // 8:
        raise MetadataError(f"the done-offsets map spans more than {MAX_SPAN} offsets")
    return {
        commit_point + index * 8 + bit
        for index, byte in enumerate(bitmap)
        if byte
        for bit in range(8)
        if byte >> bit & 1 and index * 8 + bit > 0
    }


class PartitionLedger:
    """One partition's pending and done offsets (see the module's doc).

    ``pending`` holds the offsets read and not committed, in the order read (which is
    offset order); ``done`` the committed ones above the commit point.
    """

    def __init__(self, committed: int | None, done: Iterable[int] = ()) -> None:
        """``committed``: the group's committed offset, None when the group has none yet."""
        self._pending: deque[int] = deque()
        self._pending_set: set[int] = set()
        self._done: set[int] = set(done)
        # The offset after the last record read, or the committed offset before any.
        self._read_until = committed

    def admit(self, offset: int) -> bool:
        """Record a record read at ``offset``; False when it must not be processed.

        False for a record committed already (done ahead of the commit point, from the
        metadata or from this runner) and for one read twice (already pending).
        """
        if self._read_until is not None and offset < self._read_until:
            return False
        self._read_until = offset + 1
        if offset in self._done:
            return False
        self._pending.append(offset)
        self._pending_set.add(offset)
        return True

    def commit_point(self, finishing: Iterable[int] = ()) -> int | None:
        """The offset to commit once ``finishing`` is done too (None: nothing read yet)."""
        finished = set(finishing)
        for offset in self._pending:  # offset order; done ones wait here until the head
            if offset not in finished and offset not in self._done:
                return offset
        return self._read_until

    def metadata(self, finishing: Iterable[int] = ()) -> str:
        """The done-offsets map to commit with ``commit_point(finishing)``."""
        finished = set(finishing)
        point = self.commit_point(finished)
        if point is None:
            return ""
        return encode_done(point, (o for o in self._done | finished if o > point))

    def eligible(self, offset: int) -> bool:
        """Whether the record at ``offset`` may be processed now without outrunning the map."""
        point = self.commit_point()
        return point is None or offset - point < MAX_SPAN

    def committed(self, offsets: Iterable[int]) -> None:
        """``offsets`` were committed: they are done, and the commit point moves past them."""
        for offset in offsets:
            if offset in self._pending_set:
                self._pending_set.discard(offset)
                self._done.add(offset)
        while self._pending and self._pending[0] in self._done:
            self._pending.popleft()
        point = self.commit_point()
        if point is not None:
            self._done = {o for o in self._done if o > point}

    def rewind(self) -> int | None:
        """Forget what is pending (it will be read again); the offset to read from."""
        point = self.commit_point()
        self._pending.clear()
        self._pending_set.clear()
        self._read_until = point
        return point

    @property
    def pending(self) -> int:
        """Records read and not committed."""
        return len(self._pending_set)
