"""Admission of consumed messages through the offsets ledger, and the repair of holes and stalls.

The ledger (stream/kafka/offsets.py) decides, offset by offset, what is applied. This module does
what the decisions need from Kafka: the committed offset a partition starts from, a look at the
log when a hole appears (a real gap, or records to re-read), seeks back, and waking a partition
that delivers nothing although its log holds records.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from stream.core.config import ServiceSettings
from stream.kafka import faust_internals
from stream.kafka.deadletters import DeadLetterMarks, deadletter_partition, decode_mark, encode_mark
from stream.kafka.offsets import Admission, OffsetLedger

log = logging.getLogger(__name__)

SEEK_TIMEOUT_SECONDS = 10.0


def source_of(value: bytes | None) -> tuple:
    """(topic, partition, offset) of the input record a dead letter is for; () if unreadable."""
    try:
        source = orjson.loads(value)["source"]
        return source["topic"], source["partition"], int(source["offset"])
    except Exception:  # noqa: BLE001 - not one of ours: ignored
        return ()


async def bounded(awaitable, seconds: float):
    """`await awaitable`, or TimeoutError after `seconds` -- without waiting for it to cancel
    (`asyncio.wait_for` does wait, and a call stuck in Faust's consumer thread may never finish
    cancelling, which would stop the lag observer from re-reading a stalled partition for good)."""
    task = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        log.warning("offsets: %r still running after %.0f s; abandoned", awaitable, seconds)
        raise TimeoutError(f"not done after {seconds} s")
    return task.result()


class OffsetGuard:
    """Applies each consumed partition's offsets strictly in order, for the agents."""

    def __init__(self, app, ledger: OffsetLedger, settings: ServiceSettings, metrics,
                 persisted_later_topics: set[str], deadletter_sources: set[str] = frozenset(),
                 deadletter_topic: str | None = None) -> None:
        self.app = app
        self.ledger = ledger
        self.settings = settings
        self.metrics = metrics
        # topics whose applied offsets become committable only once their facts are written
        self.persisted_later_topics = persisted_later_topics
        self.undelivered_rounds: dict = {}  # tp -> lag rounds assigned with nothing delivered
        # topics whose rejected records go to `deadletter_topic`, exactly once each
        self.deadletter_sources = deadletter_sources
        self.deadletter_topic = deadletter_topic
        self.deadletters = DeadLetterMarks()
        self.deadletter_partitions: int | None = None
        self._reader: AIOKafkaConsumer | None = None  # reads dead letters back; one read at a time
        self._reader_lock = asyncio.Lock()

    def admit_next(self, message) -> bool:
        """The common case without a coroutine per message: `message` is its partition's next
        offset (admitted). False means "ask `admit`"."""
        return self.ledger.admit_next(message.tp, message.offset)

    async def admit(self, message) -> bool:
        """Whether `message` is to be applied now; for one `admit_next` did not admit (a partition
        not started yet, a repeat, or a hole to probe)."""
        tp = message.tp
        if not self.ledger.known(tp):
            generation = faust_internals.generation(self.app)
            if tp.topic in self.deadletter_sources:
                start, metadata = await faust_internals.committed_with_metadata(self.app, tp)
                floor, found = await self._deadletters_written(tp, start, decode_mark(metadata))
            else:
                start = await faust_internals.committed_or_earliest(self.app, tp)
            if faust_internals.generation(self.app) != generation or tp not in self.app.consumer.assignment():
                return False  # rebalanced while we asked: the next assignment starts afresh
            if tp.topic in self.deadletter_sources:
                self.deadletters.start((tp.topic, tp.partition), floor, found)
            self.ledger.start(tp, start, persisted_later=tp.topic in self.persisted_later_topics)
        admission, expected = self.ledger.admit(tp, message.offset, time.monotonic())
        if admission is Admission.APPLY:
            return True
        if admission is Admission.PROBE:
            what = f"delivered offset {message.offset} before {expected}..{message.offset - 1} were applied"
            if await self.resolve_hole(tp, expected, what) and message.offset >= self.ledger.next_offset(tp):
                return await self.admit(message)  # a real gap, now skipped: this one may be next
        return False

    def deadletter_partition_of(self, tp) -> int:
        return deadletter_partition(tp.partition, self.deadletter_partitions or 1)

    def commit_metadata(self, tp, offset: int) -> str | None:
        """The dead-letter mark to commit with `offset` of an input partition (on the consumer's
        thread, stream/kafka/faust_internals.py `commit_with_metadata`)."""
        if tp.topic not in self.deadletter_sources or self.deadletter_partitions is None:
            return None
        mark = self.deadletters.mark((tp.topic, tp.partition), offset, self.deadletter_partition_of(tp))
        return None if mark is None else encode_mark(mark)

    async def _deadletters_written(self, tp, committed: int, mark: int | None) -> tuple[int, dict[int, int]]:
        """The dead letters already written for `tp`'s records at or past `committed`, read back
        from the dead-letter partition from `mark` (its start without one): (the position read
        from, {source offset: its dead letter's position}). A read that fails is logged and taken
        as "none": liveness before exactness -- a dead letter may then be written twice."""
        try:
            return await bounded(self._read_deadletters(tp, committed, mark), 3 * SEEK_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - TimeoutError, or the broker refused the read
            log.warning("dead letters: could not read back those written for %s[%s] from %s (%r); a rejected "
                        "record re-read now may get a second dead letter", tp.topic, tp.partition, mark, error)
            return mark or 0, {}

    async def _read_deadletters(self, tp, committed: int, mark: int | None) -> tuple[int, dict[int, int]]:
        async with self._reader_lock:
            if self._reader is None:
                reader = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                          enable_auto_commit=False, auto_offset_reset="earliest",
                                          **self.settings.kafka_client_options())
                await reader.start()
                self._reader = reader
            reader = self._reader
            if self.deadletter_partitions is None:
                self.deadletter_partitions = await faust_internals.partition_count(
                    faust_internals.ensure_producer(self.app), self.deadletter_topic)
            partition = TopicPartition(self.deadletter_topic, self.deadletter_partition_of(tp))
            reader.assign([partition])
            start = mark if mark is not None else (await reader.beginning_offsets([partition]))[partition]
            end = (await reader.end_offsets([partition]))[partition]
            found: dict[int, int] = {}
            if start >= end:
                return start, found
            reader.seek(partition, start)
            read = 0
            while await reader.position(partition) < end:
                batch = await reader.getmany(partition, timeout_ms=500, max_records=1000)
                for record in batch.get(partition, ()):
                    read += 1
                    source = source_of(record.value)
                    if len(source) == 3 and source[:2] == (tp.topic, tp.partition) and source[2] >= committed:
                        found[source[2]] = record.offset
            log.log(logging.INFO if found else logging.DEBUG,
                    "dead letters: %s[%s] from offset %s has %d already written (read %d from %s[%s]@%s)",
                    tp.topic, tp.partition, committed, len(found), read, partition.topic, partition.partition, start)
            return start, found

    async def stop(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            await reader.stop()

    async def resolve_hole(self, tp, start: int, what: str) -> bool:
        """Offsets from `start` on were not applied: ask the log. No records there (transaction
        markers, compaction): accept the gap and return True. Records there, or no clear answer
        (a slow broker): seek back to `start` -- re-reading is harmless -- and return False."""
        try:
            first = await bounded(self._first_offset_in_log(tp, start), SEEK_TIMEOUT_SECONDS)
        except TimeoutError:
            first = None
        if self.ledger.next_offset(tp) != start:
            return False  # settled meanwhile (the agent and the lag observer both call this)
        if first is not None and first > start:
            log.info("offsets: %s[%s] has no records at %s..%s (transaction markers or compaction)",
                     tp.topic, tp.partition, start, first - 1)
            self.metrics.offset_gaps.labels(tp.topic).inc()
            await faust_internals.add_gap(self.app, tp, start, first - 1)
            self.ledger.skip_to(tp, first)
            return True
        log.warning("offsets: %s[%s] %s; re-reading from %s", tp.topic, tp.partition, what, start)
        self.metrics.offset_holes.labels(tp.topic).inc()
        try:
            # bounded: an agent or the lag observer stuck here would stop re-reading for good
            await bounded(self.app.consumer.seek_wait({tp: start}), SEEK_TIMEOUT_SECONDS)
        except Exception as error:  # noqa: BLE001 - the stall check will try again
            log.warning("offsets: seeking %s[%s] to %s failed (%r); will retry", tp.topic, tp.partition, start, error)
        return False

    async def _first_offset_in_log(self, tp, offset: int, timeout_ms: int = 5000) -> int | None:
        """The offset of the first record at or after `offset`, read with a throwaway consumer:
        None when there is none or the read failed; with no record before the end of the log,
        the end (the consumer's position passes transaction markers without records)."""
        consumer = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                    enable_auto_commit=False, **self.settings.kafka_client_options())
        partition = TopicPartition(tp.topic, tp.partition)
        try:
            await consumer.start()
            consumer.assign([partition])
            consumer.seek(partition, offset)
            end = (await consumer.end_offsets([partition]))[partition]
            deadline = time.monotonic() + timeout_ms / 1000
            while time.monotonic() < deadline:  # short polls: a marker-only tail ends in one fetch
                batch = await consumer.getmany(partition, timeout_ms=200, max_records=1)
                records = batch.get(partition) or []
                if records:
                    return records[0].offset
                if await consumer.position(partition) >= end > offset:
                    return end
            return None
        except Exception as error:  # noqa: BLE001 - cannot tell: keep re-reading rather than skip
            log.warning("offsets: could not read %s[%s] at %s: %r", tp.topic, tp.partition, offset, error)
            return None
        finally:
            await consumer.stop()

    async def settle_idle_partition(self, tp, highwater: int) -> None:
        """A partition whose applied offsets stop short of the end while nothing arrives: either
        the rest is a transactional producer's last commit marker (lag and the committed offset
        would stay one short forever) or records faust will not deliver again (a re-read whose
        messages its read-offset filter dropped) -- holes are otherwise retried only when a later
        message arrives."""
        start = self.ledger.next_offset(tp)
        if start is None or start >= highwater:
            return
        await self.resolve_hole(tp, start, f"stalled at {start} with records up to {highwater - 1} not delivered")

    async def check_undelivered(self, tp, recovered: bool, rounds_needed: int) -> None:
        """A partition assigned for `rounds_needed` lag rounds without delivering a single message
        while its log holds records past the committed offset: faust lost its position (seen after
        "exception performing seek when flow not active"), and the stall check never sees it --
        there is no applied offset to compare, and aiokafka reports no highwater for a partition it
        does not fetch. Seek it to the committed offset; re-reading is harmless."""
        rounds = self.undelivered_rounds.get(tp, 0) + 1
        self.undelivered_rounds[tp] = rounds
        if rounds < rounds_needed or self.app.rebalancing or not recovered:
            return
        try:
            await bounded(self._wake_undelivered(tp), 2 * SEEK_TIMEOUT_SECONDS + 5)
        except TimeoutError:
            log.warning("offsets: checking %s[%s] did not finish; next lag round retries", tp.topic, tp.partition)
        except Exception:  # noqa: BLE001 - the lag observer must keep running
            log.exception("offsets: checking %s[%s] failed; next lag round retries", tp.topic, tp.partition)

    async def _wake_undelivered(self, tp) -> None:
        await self.wake_undelivered(tp)

    async def wake_undelivered(self, tp) -> bool | None:
        """Seek a partition that delivered nothing since its assignment to its committed offset
        when its log holds records from there: True when sought, False when there is nothing to
        read (committed offset at the end, or only transaction markers after it: seeking again and
        again would change nothing), None when it does not apply any more (delivering now, moved
        by a rebalance) or the log could not be read."""
        generation = faust_internals.generation(self.app)
        committed = await faust_internals.committed_or_earliest(self.app, tp)
        end = await faust_internals.end_offset(self.app, tp)
        if self._moved_on(tp, generation) or end is None:
            return None
        if committed >= end:
            return False
        first = await self._first_offset_in_log(tp, committed)
        if self._moved_on(tp, generation):
            return None
        if first is not None and first >= end:
            return False
        log.warning("offsets: %s[%s] delivered nothing since its assignment although the log holds offsets "
                    "%s..%s; seeking to %s", tp.topic, tp.partition, committed, end - 1, committed)
        self.metrics.offset_holes.labels(tp.topic).inc()
        self.undelivered_rounds[tp] = 0  # the next attempt, if needed, three rounds from now
        await bounded(self.app.consumer.seek_wait({tp: committed}), SEEK_TIMEOUT_SECONDS)
        return True

    def _moved_on(self, tp, generation: int) -> bool:
        """Rebalanced since `generation`, delivering now, or no longer assigned."""
        return (faust_internals.generation(self.app) != generation or self.ledger.known(tp)
                or tp not in self.app.consumer.assignment())

    def forget(self, revoked) -> None:
        self.ledger.forget(revoked)
        self.deadletters.forget((tp.topic, tp.partition) for tp in revoked)
        for tp in revoked:
            self.undelivered_rounds.pop(tp, None)
