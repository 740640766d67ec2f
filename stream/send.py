"""`kpi-stream send`: a file of raw input events onto the input topics (a backfill).

Each line is one raw input message, read as `kpi-stream replay` reads it (spec 7): its exact bytes,
only the newline removed. Each goes to the topic of its `type` with its entity key
(stream/core/routing.py), on the partition the Java client's murmur2 partitioner gives the key,
so that the worker finds it where its own producers would have put it. Nothing is judged here:
what has no usable type or key goes to `sales.events` with no key, and the worker dead-letters it
with its reason. Lines are sent in file order, with acks from every in-sync replica, by an
idempotent producer: within a partition -- one entity's events -- the order of the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, BinaryIO, Callable, Protocol, TextIO

from stream.core.routing import route
from stream.kafka.topics import INPUT_TOPICS
from stream.stages.outgoing import kafka_partition

log = logging.getLogger(__name__)

# Most bytes the reading thread takes at a time (less: what a pipe has)
READ_CHUNK_BYTES = 262_144
# One Kafka message at most, as the generator and the broker's default message.max.bytes allow
MAX_MESSAGE_BYTES = 1_048_576
# Partitions remembered per key before the memo is dropped (entity keys repeat; leads barely do)
PARTITION_MEMO_KEYS = 65_536


class SendError(Exception):
    """The send cannot go on: one line that says why (exit 1)."""


@dataclass(frozen=True, slots=True)
class Destination:
    bootstrap: str
    topic_prefix: str = ""
    # aiokafka security keyword arguments (ServiceSettings.kafka_client_options)
    security: dict = field(default_factory=dict)


@dataclass(slots=True)
class SendReport:
    lines: int = 0  # read
    bytes: int = 0  # of the messages sent (the lines without their newlines)
    by_topic: dict[str, int] = field(default_factory=dict)  # prefixed topic -> messages sent
    too_large: list[int] = field(default_factory=list)  # line numbers over MAX_MESSAGE_BYTES, not sent
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return sum(self.by_topic.values())

    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


class Progress(Protocol):
    def update(self, report: SendReport, read_bytes: int, seconds: float) -> None: ...

    def finish(self) -> None: ...


# -- reading -----------------------------------------------------------------------------------

class Unreadable(Exception):
    """The events file cannot be read: one line naming it (a usage error, exit 2)."""


def open_events(name: str | None) -> tuple[BinaryIO, int | None]:
    """The events file, or standard input for `-` (or no name, unless standard input is a
    terminal), and its size when it is a regular file (also `< file`): the progress bar's 100 %."""
    if name is None or name == "-":
        if name is None and sys.stdin.isatty():
            raise Unreadable("give EVENTS.jsonl, or pipe the events in (`-` reads the terminal)")
        handle = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    else:
        path = Path(name)
        if not path.is_file():
            raise Unreadable(f"cannot read {name}: {'not a file' if path.exists() else 'no such file'}")
        try:
            handle = open(path, "rb")
        except OSError as error:
            raise Unreadable(f"cannot read {name}: {error.strerror or error}") from None
    status = os.fstat(handle.fileno())
    return handle, status.st_size if stat.S_ISREG(status.st_mode) else None


async def read_lines(handle: BinaryIO, chunk_bytes: int = READ_CHUNK_BYTES) -> AsyncIterator[tuple[list[bytes], int]]:
    """The handle's lines as `kpi-stream replay` reads a file (stream/replay.py `read_lines`): each
    line's bytes without its newline, a last line without one included. Yields (lines, bytes read)
    for whatever has arrived, read in a thread: a pipe that is slow to fill never blocks the event
    loop (where the producer sends and times out its batches), nor holds back the lines it gave."""
    partial: list[bytes] = []  # the start of a line whose newline has not come yet
    while True:
        data = await asyncio.to_thread(handle.read1, chunk_bytes)
        if not data:
            if partial:
                yield [b"".join(partial)], 0
            return
        if b"\n" not in data:
            partial.append(data)
            yield [], len(data)
            continue
        lines = data.split(b"\n")
        if partial:
            lines[0] = b"".join(partial) + lines[0]
        last = lines.pop()
        partial = [last] if last else []
        yield lines, len(data)


# -- sending -----------------------------------------------------------------------------------

async def send_events(handle: BinaryIO, destination: Destination, report: SendReport,
                      progress: Progress | None = None, clock: Callable[[], float] = time.monotonic) -> SendReport:
    """Send every line of `handle`; returns once the broker acknowledged every message. `report`
    counts as it goes: the caller still has it when the send is interrupted or fails."""
    from aiokafka import AIOKafkaProducer

    partitions = await input_partitions(destination)
    # batches of up to 512 KiB, gathered for up to 20 ms: twice the lines/s of the generator's
    # 256 KiB and 5 ms on the local broker (~45,000 against ~22,000 lines/s of ~260 bytes)
    producer = AIOKafkaProducer(bootstrap_servers=destination.bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=20, max_batch_size=524_288, max_request_size=MAX_MESSAGE_BYTES,
                                **destination.security)
    await producer.start()
    started = clock()
    try:
        await _send_lines(producer, handle, destination.topic_prefix, partitions, report,
                          progress, lambda: clock() - started)
    finally:
        await producer.stop()
        report.seconds = clock() - started
        if progress is not None:
            progress.finish()
    return report


async def _send_lines(producer, handle: BinaryIO, prefix: str, partitions: dict[str, int], report: SendReport,
                      progress: Progress | None, elapsed: Callable[[], float]) -> None:
    from aiokafka.errors import MessageSizeTooLargeError

    memo: dict[bytes, int] = {}
    deliveries = _Deliveries()
    read_bytes = 0
    async for lines, size in read_lines(handle):
        read_bytes += size
        for raw in lines:
            report.lines += 1
            where = route(raw)
            topic = prefix + where.topic
            partition = None  # no key: the producer spreads them
            if where.key is not None:
                partition = memo.get(where.key)
                if partition is None:
                    if len(memo) >= PARTITION_MEMO_KEYS:
                        memo.clear()
                    partition = memo[where.key] = kafka_partition(where.key, partitions[topic])
            try:
                # aiokafka waits here while the partition's queue is full: memory stays bounded
                delivery = await producer.send(topic, value=raw, key=where.key, partition=partition)
            except MessageSizeTooLargeError:
                report.too_large.append(report.lines)
                log.warning("line %d not sent: %d bytes is more than one Kafka message holds (%d)",
                            report.lines, len(raw), MAX_MESSAGE_BYTES)
                continue
            deliveries.add(delivery)
            report.by_topic[topic] = report.by_topic.get(topic, 0) + 1
            report.bytes += len(raw)
        deliveries.check(report)
        if progress is not None:
            progress.update(report, read_bytes, elapsed())
    await deliveries.settle(report)


class _Deliveries:
    """Messages handed to the producer and not yet acknowledged, and the first that failed (after
    aiokafka's own retries): the send stops at the next chunk. Callbacks, not an await per chunk:
    waiting for acknowledgements would stall the pipeline."""

    __slots__ = ("waiting", "failure")

    def __init__(self) -> None:
        self.waiting: set[asyncio.Future] = set()
        self.failure: BaseException | None = None

    def add(self, delivery: asyncio.Future) -> None:
        self.waiting.add(delivery)
        delivery.add_done_callback(self._done)

    def _done(self, delivery: asyncio.Future) -> None:
        self.waiting.discard(delivery)
        if self.failure is None and not delivery.cancelled() and delivery.exception() is not None:
            self.failure = delivery.exception()

    def check(self, report: SendReport) -> None:
        if self.failure is not None:
            raise SendError(f"Kafka did not take every message (line {report.lines:,} had been read; sending the "
                            f"file again is safe: the worker drops repeats as duplicates): {_describe(self.failure)}")

    async def settle(self, report: SendReport) -> None:
        """Wait for every acknowledgement (each `_done` runs first: it was added first)."""
        if self.waiting:
            await asyncio.wait(list(self.waiting))
        self.check(report)


async def input_partitions(destination: Destination) -> dict[str, int]:
    """Each input topic's partition count; SendError naming them when some are missing. Topics are
    listed, not asked for by name: a broker that auto-creates topics would make a missing one,
    with its own partition count, on a metadata request naming it."""
    from aiokafka.admin import AIOKafkaAdminClient

    names = [destination.topic_prefix + name for name in INPUT_TOPICS]
    admin = AIOKafkaAdminClient(bootstrap_servers=destination.bootstrap, **destination.security)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in names if name not in existing]
        if missing:
            raise SendError(f"no topic {', '.join(missing)} on Kafka {destination.bootstrap} (KPI_TOPIC_PREFIX "
                            f"{destination.topic_prefix!r}): a worker creates the input topics at its first start")
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    counts = {entry["topic"]: len(entry["partitions"]) for entry in described}
    empty = [name for name in names if not counts.get(name)]
    if empty:
        raise SendError(f"topic {', '.join(empty)} on Kafka {destination.bootstrap} has no partitions")
    return counts


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}" if text else name


# -- progress and summary ----------------------------------------------------------------------

def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_bar(read_bytes: int, total_bytes: int | None, lines: int, seconds: float, width: int = 30) -> str:
    """One terminal line: a bar by bytes read when the input's size is known, then the counts."""
    rate = lines / seconds if seconds > 0 else 0.0
    counts = f"{lines:,} lines  {human_bytes(read_bytes)}  {rate:,.0f} lines/s"
    if not total_bytes:
        return counts
    done = min(1.0, read_bytes / total_bytes)
    filled = int(done * width)
    left = f"  ETA {(seconds / done - seconds):.0f}s" if 0 < done < 1 and seconds > 0 else ""
    return f"[{'#' * filled}{'.' * (width - filled)}] {done * 100:3.0f}%  {counts}{left}"


def format_counts(report: SendReport, seconds: float) -> str:
    """The line logged every few seconds when stderr is not a terminal."""
    rate = report.lines / seconds if seconds > 0 else 0.0
    return (f"sent {report.lines:,} lines ({human_bytes(report.bytes)}) in {seconds:.0f}s, {rate:,.0f} lines/s: "
            f"{_by_topic(report)}")


def format_summary(report: SendReport) -> str:
    """The last line of every send: what was read, and sent where."""
    line = (f"{report.lines:,} lines read, {report.sent:,} sent ({report.bytes:,} bytes, "
            f"{human_bytes(report.bytes)}) in {report.seconds:.2f}s, {report.rate():,.0f} lines/s: {_by_topic(report)}")
    if report.too_large:
        shown = ", ".join(str(number) for number in report.too_large[:10])
        more = f" and {len(report.too_large) - 10} more" if len(report.too_large) > 10 else ""
        line += f"; NOT sent, over {human_bytes(MAX_MESSAGE_BYTES)}: line {shown}{more}"
    return line


def _by_topic(report: SendReport) -> str:
    return ", ".join(f"{topic} {count:,}" for topic, count in sorted(report.by_topic.items())) or "nothing"


class TerminalBar:
    """A bar redrawn in place on a terminal, at most `every` seconds apart; cleared at the end."""

    def __init__(self, out: TextIO, total_bytes: int | None, every: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out, self.total_bytes, self.every, self.clock = out, total_bytes, every, clock
        self.drawn_at: float | None = None
        self.width = 0

    def update(self, report: SendReport, read_bytes: int, seconds: float) -> None:
        now = self.clock()
        if self.drawn_at is not None and now - self.drawn_at < self.every:
            return
        self.drawn_at = now
        text = format_bar(read_bytes, self.total_bytes, report.lines, seconds)
        self.out.write("\r" + text.ljust(self.width))
        self.out.flush()
        self.width = len(text)

    def finish(self) -> None:
        if self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()


class CountsLine:
    """A counts-and-rate line logged every `every` seconds (stderr is a file or a pipe)."""

    def __init__(self, every: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.clock = every, clock
        self.logged_at = clock()

    def update(self, report: SendReport, read_bytes: int, seconds: float) -> None:
        now = self.clock()
        if now - self.logged_at >= self.every:
            self.logged_at = now
            log.info("%s", format_counts(report, seconds))

    def finish(self) -> None:
        pass
