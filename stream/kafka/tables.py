"""The worker's Faust tables: their schema, their on-disk store settings, and their changelog
written as record batches.

Table keys and values are JSON bytes the worker encodes itself (the formats are in
stream/kafka/wire_facts.py and stream/kafka/wire_partials.py).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import faust
import orjson
from faust.types import TP

from stream.kafka.batches import BatchProducer
from stream.stages.outgoing import Outgoing
from stream.kafka.faust_internals import RAW_BYTES, is_rocksdb_store, store_put_all

log = logging.getLogger(__name__)


def raw_schema() -> faust.Schema:
    """Table keys and values are bytes we encode ourselves, in the changelog and after recovery."""
    return faust.Schema(**RAW_BYTES)


def on_disk_store_options() -> dict:
    """RocksDB settings for our tables (`KPI_STORE=rocksdb://`; ignored by `memory://`). faust's
    defaults are per database -- one per table and partition -- and sized for read-heavy tables:
    a 2 GiB block cache and up to 3 x 64 MiB of write buffers each, ~70 GiB for 4 tables x 8
    partitions. Ours are read back only when a partition is rebuilt, so small buffers and caches
    lose nothing and bound the store's memory to ~16 MiB per database. A fresh dict per table:
    faust pops keys from the one it is given."""
    return {"write_buffer_size": 4 << 20, "max_write_buffer_number": 2, "block_cache_size": 8 << 20}


def stored(value) -> Any:
    """A table key or value as we wrote it (JSON bytes). Faust's recovery path hands back the
    JSON already parsed even with raw serializers, so both forms are accepted."""
    return value if isinstance(value, (list, tuple, dict)) else orjson.loads(value)


def record_changelog_offset(store, tp, first_offset: int, last_offset: int) -> int | None:
    """Record that the local store holds changelog `tp` up to `last_offset`, after a batch at
    [first_offset, last_offset] entered it -- only if the batch follows the offset recorded so
    far. A recorded offset promises every record up to it is in the store: an on-disk store kept
    across a restart or a rebalance recovers from there. A gap before the batch holds records
    this store never took -- another owner's, written while a rebalance moved the partition and
    this batch was still on its way -- and recording past it would make the next recovery skip
    them. Then the offset stays: the next recovery re-reads from it, our own batch included.
    Returns the offset left in place when there is such a gap, else None."""
    recorded = store.persisted_offset(tp)
    previous = -1 if recorded is None else recorded
    if first_offset == previous + 1:
        store.set_persisted_offset(tp, last_offset)
    elif first_offset > previous + 1:
        return previous
    # else: recovery read past this batch already; the recorded offset never moves back
    return None


class ChangelogWriter:
    """Table writes as a few record batches on the table's changelog (what `table[key] = value`
    does one message at a time), with the local store and its recorded offset kept in step."""

    def __init__(self, batches: BatchProducer) -> None:
        self.batches = batches
        # (changelog tp, recorded offset) where a gap left a store's offset behind: logged once
        self.gaps: set[tuple[Any, int]] = set()

    async def send(self, table, partition: int, entries: list[tuple],
                   written: Callable[[int, list[Outgoing]], None] | None = None,
                   store_when_written: bool = False) -> None:
        """Send entries (key, value[, items]). With `store_when_written` the entries enter the
        local store when the broker has them; otherwise they are there already (`store_put_all`).
        Then the changelog offset is recorded, as faust does per write (an on-disk store recovers
        from there), and `written(partition, messages)` runs."""
        if not entries:
            return
        changelog = table.changelog_topic.get_topic_name()
        store = table.data

        def delivered(partition: int, last_offset: int, messages: list[Outgoing]) -> None:
            if store_when_written:
                store_put_all(table, partition, [(m.key, m.value) for m in messages])
            if is_rocksdb_store(store):
                tp = TP(changelog, partition)
                first_offset = last_offset - len(messages) + 1
                stuck_at = record_changelog_offset(store, tp, first_offset, last_offset)
                if stuck_at is not None and (tp, stuck_at) not in self.gaps:
                    # later batches find the offset behind them too: the first gap is the one to tell
                    self.gaps.add((tp, stuck_at))
                    log.warning("changelog %s[%d]: offsets %d..%d were written by another owner meanwhile and are "
                                "not in the local store; its recorded offset stays at %d (the next recovery "
                                "re-reads from there)", tp.topic, tp.partition, stuck_at + 1, first_offset - 1, stuck_at)
            if written is not None:
                written(partition, messages)

        await self.batches.send(changelog, (Outgoing(partition, key, value, items=rest[0] if rest else 1)
                                            for key, value, *rest in entries), delivered)
