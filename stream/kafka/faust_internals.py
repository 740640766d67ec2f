"""Every place the worker reaches into faust-streaming's or aiokafka's private attributes.

Written against faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned in pyproject.toml);
`check_versions` refuses to start on others, because each function here depends on how those
versions arrange their internals. The adaptations:

- the consumer's read marks and commits follow the offsets ledger (stream/kafka/offsets.py);
- commits carry the dead-letter mark in their metadata (stream/kafka/deadletters.py);
- fetches are shaped (a capped broker wait, a minimum size) and served a partition at a time;
- each fetched record is handed to the agents without four racing tasks per record;
- the producer buffer's flush waits until the buffer is empty;
- table stores are written in a chosen partition, outside stream iteration;
- the agents' topics hand over the fetched bytes without faust's codec lookups.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable, Coroutine

import aiokafka
import faust
import aiokafka.structs
from aiokafka.structs import TopicPartition
from mode.services import WaitResults

from stream.core.jsonbytes import kept
from stream.kafka.offsets import OffsetLedger

log = logging.getLogger(__name__)

WRITTEN_AGAINST = {"faust-streaming": "0.15.3", "aiokafka": "0.14.0"}


class UnsupportedVersion(RuntimeError):
    pass


def check_versions() -> None:
    """Fail fast when the installed faust or aiokafka is not the one this module was written against."""
    installed = {"faust-streaming": faust.__version__, "aiokafka": aiokafka.__version__}
    wrong = [f"{name} {installed[name]} (needs {wanted})" for name, wanted in WRITTEN_AGAINST.items()
             if installed[name] != wanted]
    if wrong:
        raise UnsupportedVersion("stream/kafka/faust_internals.py was written against other versions: "
                                 + ", ".join(wrong) + "; install the versions pinned in pyproject.toml")


# -- reading the consumer's and producer's state ---------------------------------------------

def generation(app) -> int:
    """The consumer group generation faust last joined (0 before the first)."""
    return int(getattr(app, "consumer_generation_id", 0) or 0)


def assigned_partitions(app, topic: str) -> set[int]:
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic}


def aiokafka_consumer_call(app):
    """(the aiokafka consumer, a function that runs one of its coroutine methods on its thread)."""
    thread = app.consumer._thread
    return thread._ensure_consumer(), thread.call_thread


async def committed_or_earliest(app, tp) -> int:
    consumer, call = aiokafka_consumer_call(app)
    committed = await call(consumer.committed, TopicPartition(tp.topic, tp.partition))
    if committed is not None:
        return committed
    earliest = await app.consumer.earliest_offsets(TopicPartition(tp.topic, tp.partition))
    return next(iter(earliest.values()), 0) or 0


async def committed_offsets(app, tps) -> dict:
    """Each partition's committed offset, or its earliest offset when it has none (where faust
    starts it: `consumer_auto_offset_reset="earliest"`): one OffsetFetch request for them all
    (aiokafka's public `committed` asks a partition at a time)."""
    tps = list(tps)
    if not tps:
        return {}
    consumer, call = aiokafka_consumer_call(app)
    committed = await call(consumer._coordinator.fetch_committed_offsets,
                           [TopicPartition(tp.topic, tp.partition) for tp in tps])
    offsets, missing = {}, []
    for tp in tps:
        meta = committed.get(TopicPartition(tp.topic, tp.partition))
        if meta is not None and meta.offset >= 0:
            offsets[tp] = meta.offset
        else:
            missing.append(tp)
    if missing:
        earliest = await app.consumer.earliest_offsets(*missing)
        for tp in missing:
            offsets[tp] = earliest.get(TopicPartition(tp.topic, tp.partition)) or 0
    return offsets


async def committed_with_metadata(app, tp) -> tuple[int, str | None]:
    """The partition's committed offset and the metadata committed with it; with no commit, the
    earliest offset (where faust starts it) and None."""
    consumer, call = aiokafka_consumer_call(app)
    partition = TopicPartition(tp.topic, tp.partition)
    committed = await call(consumer._coordinator.fetch_committed_offsets, [partition])
    meta = committed.get(partition)
    if meta is not None and meta.offset >= 0:
        return meta.offset, meta.metadata
    earliest = await app.consumer.earliest_offsets(partition)
    return next(iter(earliest.values()), 0) or 0, None


async def end_offset(app, tp) -> int | None:
    consumer, call = aiokafka_consumer_call(app)
    ends = await call(consumer.end_offsets, [TopicPartition(tp.topic, tp.partition)])
    return next(iter(ends.values()), None)


async def add_gap(app, tp, offset_from: int, offset_to: int) -> None:
    """Tell faust that offsets `offset_from..offset_to` of `tp` hold no records to deliver."""
    await app.consumer._kpi_add_gap(tp, offset_from, offset_to)


def fetch_buffered(aiokafka_consumer, tp) -> bool:
    """Whether aiokafka holds fetched records of `tp` not handed out yet. Read from the event
    loop's thread without a lock: a dict lookup under the GIL; a stale answer costs one lag round."""
    return TopicPartition(tp.topic, tp.partition) in aiokafka_consumer._fetcher._records


def fetch_position(aiokafka_consumer, tp) -> int | None:
    """The offset of the next record aiokafka will hand out for `tp` (those before it went to
    faust), None when it has none. Read like `fetch_buffered`, without a lock."""
    subscription = aiokafka_consumer._subscription.subscription
    if subscription is None:
        return None
    state = subscription.assignment.state_value(TopicPartition(tp.topic, tp.partition))
    return state.position if state is not None and state.has_valid_position else None


def started_producer(app):
    """faust's aiokafka producer once started, else None."""
    return getattr(app.producer, "_producer", None)


def ensure_producer(app):
    return app.producer._ensure_producer()


async def partition_count(aiokafka_producer, topic: str) -> int:
    """The topic's partition count as the producer's metadata knows it (fetched if needed)."""
    await aiokafka_producer.client._wait_on_metadata(topic)
    return len(aiokafka_producer.client.cluster.partitions_for_topic(topic))


# -- the producer buffer -----------------------------------------------------------------------

def drain_producer_buffer_fully(buffer) -> None:
    """Make `ProducerBuffer.flush()` wait until the buffer is empty.

    Faust commits offsets (and finishes a revocation) after `producer.flush()`, but its buffer
    flush gives up as soon as no message left the buffer for 0.1 s, with changelog writes still
    queued when the event loop is busy: offsets would be committed ahead of the facts they stand
    for. Here flush returns only when the buffer is empty, or raises if the producer stopped with
    messages left in it."""
    async def flush() -> None:
        while buffer.size:
            if buffer.state != "running":
                raise RuntimeError(f"producer stopped with {buffer.size} unsent messages in its buffer")
            buffer.message_sent.clear()
            try:
                await asyncio.wait_for(buffer.message_sent.wait(), timeout=1.0)
            except asyncio.TimeoutError:
                log.warning("producer buffer: %d messages still waiting to be sent", buffer.size)

    buffer.flush = flush


# -- the consumer: read marks and commits follow the ledger ----------------------------------

class LedgerReadOffsets(dict):
    """faust's per-partition "last offset read", answered by the ledger on the agents' topics.

    faust delivers a record only if its offset is >= the last one it delivered for the partition,
    and sets that mark after each delivery. When the ledger sees a hole and seeks the partition
    back, records fetched before the seek are still delivered after it and move the mark forward
    again; every re-read record would then be dropped as already read and the partition would
    stall. On the agents' topics the mark is the last offset the ledger applied, which a seek back
    never has to undo; elsewhere faust's own mark is kept."""

    def __init__(self, ledger: OffsetLedger, topics: set[str], marks) -> None:
        super().__init__(marks)
        self._ledger = ledger
        self._topics = topics

    def __missing__(self, tp):
        return None  # what faust's defaultdict(lambda: None) answers: never read

    def __getitem__(self, tp):
        if tp.topic in self._topics:
            expected = self._ledger.next_offset(tp)
            if expected is not None:
                return expected - 1 if expected > 0 else None
        return super().__getitem__(tp)


def adapt_new_consumer(app, adapt: Callable[[Any], None]) -> None:
    """Run `adapt` on faust's consumer as faust creates it -- before its fetch loop starts (which
    binds the read-mark mapping's methods once) and before its thread creates the aiokafka one.
    Creating the consumer ahead of faust's own start-up instead slows consumption threefold."""
    new_consumer = app._new_consumer

    def adapted_consumer():
        consumer = new_consumer()
        adapt(consumer)
        return consumer

    app._new_consumer = adapted_consumer


def consumer_follows_the_ledger(app, ledger: OffsetLedger, topics: set[str]) -> None:
    """faust's consumer reads and commits `topics` as the offset ledger says."""
    def follow_the_ledger(consumer) -> None:
        consumer._read_offset = LedgerReadOffsets(ledger, topics, consumer._read_offset)
        commit_only_applied_offsets(consumer, ledger, topics)

    adapt_new_consumer(app, follow_the_ledger)


def commit_only_applied_offsets(consumer, ledger: OffsetLedger, topics: set[str]) -> None:
    """Commit offsets of the agents' topics only up to the ledger's next unapplied offset.

    faust decides what to commit from the offsets its streams acked, and also counts as done every
    offset it did not see between two it did (`_add_gap`, meant for compacted topics); with a
    committed offset of None or 0 it does not even check that the acked offsets start where the
    committed ones end. On the agents' topics the ledger knows which offsets were applied, so
    faust's gap filling is switched off there and its commit is capped at the ledger; a gap the
    ledger accepted is handed to faust explicitly (`add_gap`)."""
    new_offset = consumer._new_offset
    faust_add_gap = consumer._add_gap

    def capped_new_offset(tp):
        if tp.topic not in topics:
            return new_offset(tp)
        limit = ledger.commit_limit(tp)
        if limit is None:
            return None
        offset = new_offset(tp)
        if offset is None or offset <= limit:
            return offset
        # faust forgets the acked offsets it returns (they count as committed from now on) and
        # never commits past a gap after the committed offset: the ones past the cap go back,
        # or this partition's commits would stop here for good
        behind_cap = range(limit, offset)
        consumer._acked[tp].extend(behind_cap)
        consumer._acked[tp].sort()
        consumer._acked_index[tp].update(behind_cap)
        return limit

    async def gap_outside_agent_topics(tp, offset_from: int, offset_to: int) -> None:
        if tp.topic not in topics:
            await faust_add_gap(tp, offset_from, offset_to)

    consumer._new_offset = capped_new_offset
    consumer._add_gap = gap_outside_agent_topics
    consumer._kpi_add_gap = faust_add_gap


def commit_with_metadata(app, metadata_of: Callable[[Any, int], str | None]) -> None:
    """Commit each partition's offset with `metadata_of(tp, offset)` as its metadata (None: faust's
    empty string). faust builds the OffsetAndMetadata itself, with no metadata, and hands it to the
    aiokafka consumer's `commit` on the consumer's thread: that call is wrapped here, so
    `metadata_of` runs on that thread too."""
    def with_metadata(consumer) -> None:
        thread = consumer._thread
        create_aiokafka_consumer = thread._create_worker_consumer

        def create_committing_with_metadata(transport):
            aiokafka_consumer = create_aiokafka_consumer(transport)
            commit = aiokafka_consumer.commit

            async def commit_offsets(offsets=None):
                if offsets:
                    offsets = {tp: aiokafka.structs.OffsetAndMetadata(
                        meta.offset, metadata_of(tp, meta.offset) or meta.metadata)
                        if isinstance(meta, aiokafka.structs.OffsetAndMetadata) else meta
                        for tp, meta in offsets.items()}
                return await commit(offsets)

            aiokafka_consumer.commit = commit_offsets
            return aiokafka_consumer

        thread._create_worker_consumer = create_committing_with_metadata

    adapt_new_consumer(app, with_metadata)


# -- the consumer: how records are fetched and handed over ---------------------------------

def fetch_like_the_worker(app, fetch_max_wait_ms: int, fetch_min_bytes: int) -> None:
    """The worker's changes to how faust's consumer fetches and hands records to the agents. The
    empty-agent ceiling in bench/throughput.py installs the same, so both fetch alike."""
    shape_fetches(app, fetch_max_wait_ms, fetch_min_bytes)
    take_partition_turns(app)
    adapt_new_consumer(app, deliver_without_racing_tasks)


def shape_fetches(app, fetch_max_wait_ms: int, fetch_min_bytes: int) -> None:
    """Let the broker hold a fetch for at most `fetch_max_wait_ms`, and answer it before then only
    once it has `fetch_min_bytes` of records for it.

    The wait: faust creates its aiokafka consumer with fetch_max_wait_ms=1500, not a setting.
    aiokafka keeps one fetch in flight per broker, naming only partitions with no records in its
    buffer -- often just idle ones -- and the broker holds such a fetch until one of them gets a
    record or the wait ends, while the busy partitions cannot be fetched.
    The minimum: with 1 byte, a fetch comes back as soon as any partition it names has a record,
    so at a steady rate the consumer thread fetches hundreds of times a second and takes the GIL
    from the main thread; with KPI_FETCH_MIN_BYTES the broker gathers records for up to the wait."""
    def shape(consumer) -> None:
        thread = consumer._thread
        create_aiokafka_consumer = thread._create_worker_consumer

        def create_with_shaped_fetches(transport):
            aiokafka_consumer = create_aiokafka_consumer(transport)
            # both read by its fetcher when it starts
            aiokafka_consumer._fetch_max_wait_ms = fetch_max_wait_ms
            aiokafka_consumer._fetch_min_bytes = fetch_min_bytes
            return aiokafka_consumer

        thread._create_worker_consumer = create_with_shaped_fetches

    adapt_new_consumer(app, shape)


def send_served_partitions_to_the_back(aiokafka_consumer, served) -> None:
    """Move the partitions a getmany just served behind the others in aiokafka's fetch buffer."""
    buffered = aiokafka_consumer._fetcher._records  # one fetch result per partition, in arrival order
    for tp in served:
        result = buffered.pop(tp, None)
        if result is not None:  # records left: its next turn comes after every other partition's
            buffered[tp] = result


def take_partition_turns(app) -> None:
    """Hand out buffered records a partition at a time, round-robin, `broker_max_poll_records` per turn.

    aiokafka's fetcher keeps one fetch result per partition (up to 1 MiB, ~4,500 events) and
    serves getmany from the first result in arrival order until it is used up. Without turns a
    partition waits for every other partition's whole fetch while the worker catches up (10-20 s
    with ~28 partitions). Installed on the consumer thread's fetch call; runs on that thread."""
    turns_broken: list[BaseException] = []  # logged once

    def take_turns(consumer) -> None:
        thread = consumer._thread
        fetch_records = thread._fetch_records

        async def fetch_records_in_turns(aiokafka_consumer, active_partitions, timeout=None, max_records=None):
            records = await fetch_records(aiokafka_consumer, active_partitions, timeout=timeout,
                                          max_records=max_records)
            try:
                send_served_partitions_to_the_back(aiokafka_consumer, records)
            except AttributeError as error:
                if not turns_broken:
                    turns_broken.append(error)
                    log.error("consumer: cannot reorder aiokafka's fetch buffer (%r): partitions are "
                              "served in fetch order, without turns", error)
            return records

        thread._fetch_records = fetch_records_in_turns

    adapt_new_consumer(app, take_turns)


def deliver_without_racing_tasks(consumer) -> None:
    """faust's fetch loop hands each record over with `wait_first(callback(message),
    suspend_flow.wait())`, so that a rebalance abandons a hand-over stuck waiting; mode wraps both
    coroutines and two events in four tasks per record (~33 us, against ~0.5 us for the hand-over,
    which almost never waits). Here the callback is stepped once by hand; if it finishes in that
    step there is nothing to race, and if it waits, the rest runs raced against the suspension by
    faust's own `wait_first`, as before. Installed before the consumer's fetch loop starts."""
    race = consumer.wait_first
    suspended: asyncio.Event = consumer.suspend_flow
    stopped, crashed = consumer._stopped, consumer._crashed

    async def wait_first(*coros, timeout=None):
        if (len(coros) != 2 or timeout is not None or not _waits_on(coros[1], suspended)
                or suspended.is_set() or stopped.is_set() or crashed.is_set()):
            return await race(*coros, timeout=timeout)  # not the fetch loop's hand-over, or not now
        hand_over, suspension = coros
        try:
            yielded = hand_over.send(None)
        except StopIteration as done:
            suspension.close()
            return WaitResults([hand_over], [done.value], False)
        except BaseException:
            suspension.close()
            raise
        return await race(finish_stepped(hand_over, yielded), suspension)

    consumer.wait_first = wait_first


def _waits_on(coro: Any, event: asyncio.Event) -> bool:
    """Whether `coro` is `event.wait()`, not started yet."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event


async def finish_stepped(coro: Coroutine, yielded: Any) -> Any:
    """Run the rest of a coroutine stepped by hand until it yielded `yielded`, as its own task
    would: wait for each future it yields, then resume it (it reads the future's outcome itself);
    a cancellation of this task cancels that future and is thrown into the coroutine."""
    while True:
        try:
            if yielded is None:  # a bare yield (asyncio.sleep(0)): one turn of the loop
                await asyncio.sleep(0)
            else:
                yielded._asyncio_future_blocking = False  # as a task does on taking the future
                await asyncio.wait((yielded,))  # done, whatever its outcome; never raises it
        except asyncio.CancelledError as cancelled:
            if yielded is not None:
                yielded.cancel()
            try:
                yielded = coro.throw(cancelled)
            except StopIteration as done:
                return done.value
            continue
        try:
            yielded = coro.send(None)
        except StopIteration as done:
            return done.value


# -- schemas and table stores ---------------------------------------------------------------

RAW_BYTES = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}


class BytesAsFetched(faust.Schema):
    """The agents' topics: each message handed over as the key and value bytes Kafka returned,
    without faust's codec registry and settings lookups (~5 us a message). Sends through these
    topics (the router's re-keying) encode as raw bytes."""

    def __init__(self) -> None:
        super().__init__(**RAW_BYTES)

    def compile(self, app, *, on_key_decode_error=None, on_value_decode_error=None, default_propagate=False):
        # what app.create_event builds, without its settings lookup per message (~2 us)
        event_type = app.conf.Event

        async def decode(message, *, propagate: bool = default_propagate):
            return event_type(app, message.key, message.value, message.headers, message)

        return decode


def is_rocksdb_store(store) -> bool:
    return hasattr(store, "_db_for_partition")  # rocksdb: one database per partition


def store_put_all(table, partition: int, entries: list[tuple]) -> None:
    """`table[key] = value` in the local store only, in changelog partition `partition` (faust
    takes the partition from the current stream event, and refuses writes without one)."""
    store = table.data
    for key, value, *_ in entries:
        key = kept(key)  # a store keeps its keys (and in memory its values) for good: stream/core/jsonbytes.py
        if is_rocksdb_store(store):
            encoded = store._encode_key(key)
            store._db_for_partition(partition).put(encoded, store._encode_value(value))
            store._key_index[encoded] = partition
        else:
            store[key] = kept(value)
