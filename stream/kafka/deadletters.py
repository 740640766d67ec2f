"""Which input records already have their dead letter, so that each gets exactly one.

A worker re-reads every record past its partition's committed offset after a restart or a
rebalance; a rejected one among them had its dead letter written by the previous owner. Kafka
cannot write the dead letter and the offset together without transactions, so the new owner reads
back what was written instead, and writes only the dead letters that are not there.

To keep that read short, every commit of an input partition carries, in the offset's metadata, a
*mark*: a position of the dead-letter partition at or before every dead letter of this input
partition's records at or past the committed offset. The next owner reads the dead-letter
partition from the mark to its end, and notes the source offsets found (`start`). The mark of a
commit at offset C is the lowest lower bound of the positions of dead letters already sent for
records at or past C, or, when there are none, the end of the dead-letter partition as this
worker's own acknowledged writes show it: every later dead letter goes after that. Without a mark
(a partition never committed with one) the read starts at the beginning.

Dead letters of input partition P go to dead-letter partition P (modulo its count). No Kafka
imports; the read itself is stream/kafka/holes.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

MARK_PREFIX = "kpi-deadletters@"
# dead letters remembered per input partition before those below its committed offset are dropped
PRUNE_AT = 1024


def encode_mark(position: int) -> str:
    return f"{MARK_PREFIX}{position}"


def decode_mark(metadata: str | None) -> int | None:
    """The position a commit's metadata carries; None when it carries none (or another's)."""
    if not metadata or not metadata.startswith(MARK_PREFIX):
        return None
    try:
        position = int(metadata[len(MARK_PREFIX):])
    except ValueError:
        return None
    return position if position >= 0 else None


def deadletter_partition(source_partition: int, partitions: int) -> int:
    return source_partition % partitions


@dataclass(slots=True)
class SourceLetters:
    """The dead letters of one input partition's records at or past its committed offset."""

    # source offset -> a position at or before its dead letter
    written: dict[int, int] = field(default_factory=dict)
    # at or before every dead letter of this partition's records not in `written`
    floor: int = 0
    # the last offset committed (set on the consumer's thread): entries below it may go
    committed: int = 0


class DeadLetterMarks:
    def __init__(self) -> None:
        self.sources: dict[Hashable, SourceLetters] = {}
        # dead-letter partition -> one past the highest position this worker's writes got there
        self.acked_end: dict[int, int] = {}

    def start(self, tp: Hashable, floor: int, found: dict[int, int]) -> None:
        """The partition was (re)assigned: `found` are the dead letters read back from `floor` on,
        for its records at or past the committed offset."""
        self.sources[tp] = SourceLetters(dict(found), floor)

    def known(self, tp: Hashable) -> bool:
        return tp in self.sources

    def already_written(self, tp: Hashable, offset: int) -> bool:
        source = self.sources.get(tp)
        return source is not None and offset in source.written

    def note_sent(self, tp: Hashable, offset: int, deadletter_partition: int) -> None:
        """A dead letter for the record at `offset` is queued for `deadletter_partition`."""
        source = self.sources.get(tp)
        if source is None:
            return
        if len(source.written) >= PRUNE_AT:
            settled = source.committed
            source.written = {o: p for o, p in source.written.items() if o >= settled}
        source.written[offset] = max(source.floor, self.acked_end.get(deadletter_partition, 0))

    def note_acked(self, deadletter_partition: int, last_position: int) -> None:
        if last_position + 1 > self.acked_end.get(deadletter_partition, 0):
            self.acked_end[deadletter_partition] = last_position + 1

    def mark(self, tp: Hashable, committed: int, deadletter_partition: int) -> int | None:
        """The position to commit with offset `committed` (None: the partition is not known).
        Runs on the consumer's thread: reads only, from copies."""
        source = self.sources.get(tp)
        if source is None:
            return None
        ahead = [position for offset, position in list(source.written.items()) if offset >= committed]
        source.committed = max(source.committed, committed)
        if ahead:
            return min(ahead)
        return max(source.floor, self.acked_end.get(deadletter_partition, 0))

    def forget(self, tps) -> None:
        for tp in tps:
            self.sources.pop(tp, None)
