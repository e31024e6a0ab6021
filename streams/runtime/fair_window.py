"""Weighted fair scheduling of a processor's input across tenants, within a window.

Kafka hands a consumer each partition's records in offset order. Were a processor to
take them in that order, one tenant's burst of 5,000 requests would delay every record
produced after it, whoever sent it. A runner whose spec says whose each record is
(``ProcessorSpec.share_of``) therefore reads ahead into a bounded window, one queue per
share (a tenant), and builds each batch by **self-clocked fair queuing** (SCFQ,
Golestani 1994), as the gateway admits its callers (``streams.gateway.fair_queue``):

* a share's head record gets the tag ``start + 1 / weight``, where ``start`` is the tag
  of its previous record while the share stays backlogged, or the virtual time ``V``
  (the tag of the record taken last) when it arrives with an empty queue;
* the smallest tag is taken next (ties: the earlier arrival) and ``V`` becomes it.

So with equal weights, a tenant arriving while another is backlogged has its k-th
record taken within the next ``2k`` records; with weights ``wa`` (backlogged) and
``wb``, within ``k + ceil(k * wa / wb)``. Within a share, records keep the order they
were read in, so a tenant's own requests are never reordered.

Records then finish out of offset order; ``streams.runtime.offset_ledger`` keeps each
partition's commit exact. A record may run at most ``MAX_SPAN`` offsets ahead of its
partition's commit point; past that it waits, and the record at the commit point is
always eligible, so the window always makes progress.

The window is bounded in records and bytes. Fairness holds among the records it holds:
a tenant whose records sit further back than the window reaches (behind another's
backlog larger than it) waits until the window reaches them. Rate limits, more
partitions and more replicas are what bound that backlog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.runtime.offset_ledger import PartitionLedger
from streams.runtime.spec import InputRecord, Share

Partition = tuple[str, int]


@dataclass(eq=False)
class _Queue:
    records: deque[tuple[int, InputRecord]] = field(default_factory=deque)  # (arrival, record)
    weight: int = 1
    start: float = 0.0  # virtual start of its head record


class FairWindow:
    """Records read ahead, by share; batches taken fairly (see the module's doc)."""

    def __init__(self, max_records: int, max_bytes: int) -> None:
        if max_records < 1 or max_bytes < 1:
            raise ValueError("the window must hold at least one record and one byte")
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.ledgers: dict[Partition, PartitionLedger] = {}
        self._queues: dict[str, _Queue] = {}
        self._virtual_time = 0.0
        self._arrivals = 0
        self.records = 0
        self.bytes = 0
        self.skipped = 0  # records read again that were committed already

    # -- partitions ------------------------------------------------------------------------
    def assign(self, partition: Partition, ledger: PartitionLedger) -> None:
        """Start tracking ``partition`` from its committed offset and done map."""
        self.ledgers[partition] = ledger

    def revoke(self, partitions: Iterable[Partition]) -> None:
        """Forget ``partitions``: their buffered records are the next owner's to read."""
        gone = set(partitions)
        for partition in gone:
            self.ledgers.pop(partition, None)
        self._drop(lambda record: (record.topic, record.partition) in gone)

    def rewind(self) -> dict[Partition, int]:
        """Empty the window; where each partition must be read from again."""
        self._drop(lambda _record: True)
        seeks = {}
        for partition, ledger in self.ledgers.items():
            offset = ledger.rewind()
            if offset is not None:
                seeks[partition] = offset
        return seeks

    # -- records ---------------------------------------------------------------------------
    @property
    def full(self) -> bool:
        """True when no more records should be read (either bound reached)."""
        return self.records >= self.max_records or self.bytes >= self.max_bytes

    @property
    def room(self) -> int:
        """Records that may be read now."""
        return 0 if self.full else self.max_records - self.records

    def add(self, record: InputRecord, share: Share) -> bool:
        """Queue ``record`` under ``share``; False when it was committed already (skipped)."""
        partition = (record.topic, record.partition)
        ledger = self.ledgers.get(partition)
        if ledger is None:  # read before its assignment was seen: start from here
            ledger = self.ledgers[partition] = PartitionLedger(None)
        if not ledger.admit(record.offset):
            self.skipped += 1
            return False
        queue = self._queues.get(share.key)
        if queue is None:
            queue = self._queues[share.key] = _Queue()
        if not queue.records:
            # Arriving idle: it starts at the present, not owed for the time it was away.
            queue.start = self._virtual_time
        queue.weight = max(1, share.weight)
        self._arrivals += 1
        queue.records.append((self._arrivals, record))
        self.records += 1
        self.bytes += _size(record)
        return True

    def take(self, count: int) -> list[InputRecord]:
        """Up to ``count`` records, the smallest virtual finish tags first."""
        batch: list[InputRecord] = []
        while len(batch) < count:
            best: tuple[float, int, _Queue] | None = None
            for queue in self._queues.values():
                if not queue.records:
                    continue
                arrival, head = queue.records[0]
                ledger = self.ledgers[(head.topic, head.partition)]
                if not ledger.eligible(head.offset):
                    continue  # too far ahead of its partition's commit point: wait
                tag = queue.start + 1.0 / queue.weight
                if best is None or (tag, arrival) < (best[0], best[1]):
                    best = (tag, arrival, queue)
            if best is None:
                break
            tag, _, queue = best
            _, record = queue.records.popleft()
            self._virtual_time = tag
            queue.start = tag
            self.records -= 1
            self.bytes -= _size(record)
            batch.append(record)
        self._forget_idle()
        return batch

    def queued(self) -> dict[str, int]:
        """Records waiting, by share."""
        return {key: len(q.records) for key, q in self._queues.items() if q.records}

    # -- commits ---------------------------------------------------------------------------
    def commit_offsets(self, batch: Iterable[InputRecord]) -> dict[Partition, tuple[int, str]]:
        """Per partition of ``batch``: the offset and metadata to commit with it."""
        finishing: dict[Partition, list[int]] = {}
        for record in batch:
            finishing.setdefault((record.topic, record.partition), []).append(record.offset)
        offsets = {}
        for partition, done in finishing.items():
            ledger = self.ledgers[partition]
            point = ledger.commit_point(done)
            if point is not None:
                offsets[partition] = (point, ledger.metadata(done))
        return offsets

    def committed(self, batch: Iterable[InputRecord]) -> None:
        """``batch`` was committed: its records are done."""
        finished: dict[Partition, list[int]] = {}
        for record in batch:
            finished.setdefault((record.topic, record.partition), []).append(record.offset)
        for partition, offsets in finished.items():
            ledger = self.ledgers.get(partition)
            if ledger is not None:  # revoked meanwhile: the commit says it all
                ledger.committed(offsets)

    # -- internals -------------------------------------------------------------------------
    def _drop(self, doomed: Callable[[InputRecord], bool]) -> None:
        for queue in self._queues.values():
            kept = deque(item for item in queue.records if not doomed(item[1]))
            for _, record in queue.records:
                if doomed(record):
                    self.records -= 1
                    self.bytes -= _size(record)
            queue.records = kept
        self._forget_idle()

    def _forget_idle(self) -> None:
        # An idle share's tag is <= V: nothing about it is worth remembering.
        for key in [k for k, q in self._queues.items() if not q.records]:
            del self._queues[key]


def _size(record: InputRecord) -> int:
    return len(record.raw or b"") + len(record.key or b"")
