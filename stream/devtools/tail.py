"""Print a topic's messages as JSON lines, then exit:

    python -m stream.devtools.tail --kafka HOST:PORT kpi.updates             # all there is now
    python -m stream.devtools.tail --kafka HOST:PORT kpi.updates --limit 5   # the last 5
    python -m stream.devtools.tail --kafka HOST:PORT kpi.updates --follow    # then keep printing

Without --follow it reads each partition up to its end as found at the start and exits -- it does
not wait for the topic to go quiet, so it works on a busy topic. --limit N keeps the last N messages
(by timestamp over all partitions); with --follow, it prints those and then what comes.
--key SUBSTRING keeps only messages whose key contains it.

Security (TLS, SASL) comes from the worker's variables: KAFKA_SECURITY_PROTOCOL and the rest."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Callable

import orjson


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float, follow: bool, limit: int | None = None,
                     key_contains: str | None = None, **security) -> list[dict]:
    """Every message of `topic` up to its end at the start (or its last `limit`), as rows.

    With `follow`, each row is printed to stdout as it comes, without end. `timeout_s` is how long
    a fetch may wait for messages; without `follow`, a fetch that finds none by then ends the read
    even if a partition's end was not reached (its last offsets may hold no message to read:
    transaction markers)."""
    from aiokafka import AIOKafkaConsumer

    # subscribed at first only so that start() loads the topic's metadata; then assigned
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **security)
    await consumer.start()
    try:
        return await read_partitions(consumer, topic, timeout_s=timeout_s, follow=follow, limit=limit,
                                     key_contains=key_contains, emit=_print_row if follow else None)
    finally:
        await consumer.stop()


async def read_partitions(consumer, topic: str, *, timeout_s: float, follow: bool, limit: int | None = None,
                          key_contains: str | None = None,
                          emit: Callable[[dict], None] | None = None) -> list[dict]:
    """The reading, given a started aiokafka-like consumer (its subscription is dropped)."""
    from aiokafka import TopicPartition

    partitions = await _partitions_of(consumer, topic)
    if not partitions:
        return []
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.unsubscribe()
    consumer.assign(tps)
    begin = await consumer.beginning_offsets(tps)
    end = await consumer.end_offsets(tps)
    # with a key to match, the last `limit` matching ones may be anywhere: read it all
    tail_only = limit is not None and key_contains is None
    start = {tp: max(begin[tp], end[tp] - limit) if tail_only else begin[tp] for tp in tps}
    for tp in tps:
        consumer.seek(tp, start[tp])
    remaining = {tp for tp in tps if end[tp] > start[tp]}
    out: list[dict] = []
    # up to the end found at the start; with --limit, kept back and cut to the last `limit`
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=int(timeout_s * 1000))
        if not batch:
            break
        for tp, records in batch.items():
            for record in records:
                if record.offset >= end[tp]:
                    break
                if key_contains is None or (record.key is not None and key_contains in record.key.decode(errors="replace")):
                    out.append(_row(record))
            if records and records[-1].offset >= end[tp] - 1:
                remaining.discard(tp)
        for tp in list(remaining):
            if await consumer.position(tp) >= end[tp]:
                remaining.discard(tp)
    if limit is not None:
        out.sort(key=lambda row: (row["timestamp"], row["partition"], row["offset"]))
        out = out[-limit:] if limit > 0 else []
    if not follow:
        return out
    for row in out:
        emit(row)
    for tp in tps:
        consumer.seek(tp, end[tp])
    while True:
        batch = await consumer.getmany(timeout_ms=int(timeout_s * 1000))
        for records in batch.values():
            for record in records:
                if key_contains is None or (record.key is not None and key_contains in record.key.decode(errors="replace")):
                    emit(_row(record))


async def _partitions_of(consumer, topic: str) -> set[int]:
    partitions = consumer.partitions_for_topic(topic)
    if partitions is None:  # no metadata of it yet (or no such topic): ask the cluster
        cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - aiokafka has no public call
        partitions = cluster.partitions_for_topic(topic)
    return set(partitions or ())


def _row(record) -> dict:
    return {
        "partition": record.partition, "offset": record.offset, "timestamp": record.timestamp,
        "key": record.key.decode(errors="replace") if record.key is not None else None,
        "value": _value(record.value),
        "headers": {k: v.decode(errors="replace") for k, v in record.headers},
    }


def _print_row(row: dict) -> None:
    sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
    sys.stdout.flush()


def _value(raw: bytes | None):
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stream.devtools.tail", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("topic")
    parser.add_argument("--kafka", required=True, help="bootstrap servers")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing what comes")
    parser.add_argument("--limit", "-n", type=int, default=None, help="only the last N messages")
    parser.add_argument("--key", default=None, help="only messages whose key contains this")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds a fetch may wait (default 3)")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must be 0 or more")
    from stream.core.config import ServiceSettings

    security = ServiceSettings.from_env().kafka_client_options()
    try:
        rows = asyncio.run(read_topic(args.kafka, args.topic, timeout_s=args.timeout, follow=args.follow,
                                      limit=args.limit, key_contains=args.key, **security))
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
        sys.stdout.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
