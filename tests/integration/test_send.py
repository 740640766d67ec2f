"""`kpi-stream send` against a real broker: every line of a file lands on the topic of its type,
keyed by its entity, on the Java client's murmur2 partition, with its exact bytes; what cannot be
routed lands on sales.events without a key; the summary counts what was sent where."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stream.kafka.topics import INPUT_TOPICS, TopicNames, ensure_topics
from stream.stages.outgoing import kafka_partition
from tests.e2e.harness import unique_names

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4
AT = "2026-11-24T10:00:00Z"


def event(event_type: str, event_id: str, **fields) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": event_type, "occurred_at": AT, **fields})


# (line bytes, expected topic, expected key): the spec's topic table written out, not computed
EVERY_TYPE = [
    (event("outlet.onboarded", "e1", outlet_id="o-1", region="r1"), "sales.outlets", b"o-1"),
    (event("outlet.updated", "e2", outlet_id="o-2", channel="horeca"), "sales.outlets", b"o-2"),
    (event("order.placed", "e3", outlet_id="o-1", order_id="x", amount="1.50", currency="USD", lines=1),
     "sales.orders", b"o-1"),
    (event("visit.completed", "e4", outlet_id="o-3", visit_id="v", rep_id="rep-1"), "sales.visits", b"o-3"),
    (event("lead.created", "e5", lead_id="L-1", rep_id="rep-1", value=100), "sales.leads", b"L-1"),
    (event("lead.updated", "e6", lead_id="L-2", stage="proposal"), "sales.leads", b"L-2"),
    (event("lead.won", "e7", lead_id="L-1"), "sales.leads", b"L-1"),
    (event("lead.lost", "e8", lead_id="L-3", reason="price"), "sales.leads", b"L-3"),
    (event("activity.logged", "e9", rep_id="rep-7", kind="call"), "sales.activities", b"rep-7"),
    (event("target.set", "e9t", kpi="activities", period="2026-11", scope="rep", scope_id="rep|7", value=40),
     "sales.targets", b"activities|2026-11|rep|rep%7C7|all"),
    (event("order.placed", "e10", outlet_id="café-9", order_id="y", amount=2, currency="USD", lines=2),
     "sales.orders", "café-9".encode()),
    # its own formatting and a carriage return: sent as they are, only the newline goes
    (b'{ "type" : "visit.completed", "event_id":"e11", "occurred_at":"' + AT.encode()
     + b'", "outlet_id":"o-4", "visit_id":"w", "rep_id":"rep-2" }\r', "sales.visits", b"o-4"),
]
MANY_OUTLETS = [(event("order.placed", f"m{n}", outlet_id=f"out-{n:03d}", order_id=f"m{n}", amount="1", currency="USD",
                       lines=1), "sales.orders", f"out-{n:03d}".encode()) for n in range(60)]
UNROUTABLE = [
    (b'{"event_id": "broken"', "sales.events", None),  # malformed JSON
    (event("order.voided", "u1", outlet_id="o-1"), "sales.events", None),  # unknown type
    (event("order.placed", "u2", order_id="z", amount="1", currency="USD", lines=1), "sales.events", None),  # no key
    (event("lead.created", "u3", lead_id="", rep_id="rep-1"), "sales.events", None),  # an empty key
    (b"[1, 2, 3]", "sales.events", None),  # not an object
    (b"\xff\xfe not utf-8 \x80", "sales.events", None),
    (b"", "sales.events", None),  # an empty line is a message too (replay reads it as one)
]


def run_send(*args: str, prefix: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KPI_", "KAFKA_"))}
    env["KPI_TOPIC_PREFIX"] = prefix
    return subprocess.run([sys.executable, "-m", "stream", "send", *args], env=env, cwd=REPO, input=stdin,
                          capture_output=True, timeout=120)


async def create_input_topics(bootstrap: str, prefix: str, app_id: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # as a worker does at its first start
        await ensure_topics(admin, TopicNames(prefix, app_id), PARTITIONS, 1)
    finally:
        await admin.close()


async def read_raw(bootstrap: str, topics: list[str]) -> dict[str, list[tuple[int, bytes | None, bytes]]]:
    """Every record of each topic as (partition, key, value), each partition in offset order."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for topic in topics for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: dict[str, list] = {topic: [] for topic in topics}
        remaining = {tp for tp in tps if end[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=5000)
            assert batch, f"nothing more to read from {remaining}"
            for tp, records in batch.items():
                out[tp.topic] += [(r.partition, r.key, r.value) for r in records]
                if await consumer.position(tp) >= end[tp]:
                    remaining.discard(tp)
        return out
    finally:
        await consumer.stop()


def test_each_line_lands_on_its_topic_key_and_murmur2_partition_with_its_exact_bytes(kafka_broker, tmp_path):
    prefix, app_id = unique_names()
    asyncio.run(create_input_topics(kafka_broker.bootstrap, prefix, app_id))
    lines = EVERY_TYPE + UNROUTABLE[:3] + MANY_OUTLETS + UNROUTABLE[3:]
    events = tmp_path / "events.jsonl"
    # the last line without a newline counts too
    events.write_bytes(b"\n".join(raw for raw, _, _ in lines) + b"\n" + EVERY_TYPE[0][0])
    lines.append(EVERY_TYPE[0])

    result = run_send(str(events), "--kafka", kafka_broker.bootstrap, prefix=prefix)

    assert result.returncode == 0, result.stderr.decode()
    records = asyncio.run(read_raw(kafka_broker.bootstrap, [prefix + name for name in INPUT_TOPICS]))
    expected: dict[str, list] = {prefix + name: [] for name in INPUT_TOPICS}
    for raw, topic, key in lines:
        expected[prefix + topic].append((key, raw))
    for topic, wanted in expected.items():
        got = records[topic]
        assert sorted((key, value) for _, key, value in got) == sorted(wanted), topic
        for partition, key, _ in got:
            if key is not None:
                assert partition == kafka_partition(key, PARTITIONS), (topic, key)
    # file order within each partition
    for topic, got in records.items():
        for partition in range(PARTITIONS):
            in_partition = [value for p, _, value in got if p == partition]
            in_file = [raw for raw, t, key in lines if prefix + t == topic
                       and key is not None and kafka_partition(key, PARTITIONS) == partition]
            if topic != prefix + "sales.events":
                assert in_partition == in_file, (topic, partition)
    assert len({p for p, _, _ in records[prefix + "sales.orders"]}) == PARTITIONS  # keys spread over all

    summary = result.stderr.decode().strip().splitlines()[-1]
    counts = {topic: len(wanted) for topic, wanted in expected.items()}
    assert f"send done: {len(lines)} lines read, {len(lines)} sent" in summary, summary
    for topic, count in counts.items():
        assert f"{topic} {count}" in summary, (topic, summary)
    assert f"({sum(len(raw) for raw, _, _ in lines):,} bytes" in summary


def test_standard_input_is_read_when_no_file_is_named(kafka_broker):
    prefix, app_id = unique_names()
    asyncio.run(create_input_topics(kafka_broker.bootstrap, prefix, app_id))
    piped = [EVERY_TYPE[2][0], UNROUTABLE[1][0], EVERY_TYPE[8][0]]

    result = run_send("--kafka", kafka_broker.bootstrap, prefix=prefix, stdin=b"\n".join(piped) + b"\n")

    assert result.returncode == 0, result.stderr.decode()
    summary = result.stderr.decode().strip().splitlines()[-1]
    assert "send done: 3 lines read, 3 sent (" in summary, summary
    assert f"{prefix}sales.activities 1, {prefix}sales.events 1, {prefix}sales.orders 1" in summary, summary
    records = asyncio.run(read_raw(kafka_broker.bootstrap, [prefix + "sales.orders", prefix + "sales.events"]))
    assert [(key, value) for _, key, value in records[prefix + "sales.orders"]] == [(b"o-1", piped[0])]
    assert [(key, value) for _, key, value in records[prefix + "sales.events"]] == [(None, piped[1])]


def test_missing_input_topics_are_named_in_one_line_and_left_missing(kafka_broker, tmp_path):
    prefix, _ = unique_names()
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVERY_TYPE[0][0] + b"\n")

    result = run_send(str(events), "--kafka", kafka_broker.bootstrap, prefix=prefix)

    lines = result.stderr.decode().strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in lines[0], result.stderr.decode()
    assert f"{prefix}sales.outlets" in lines[0] and "KPI_TOPIC_PREFIX" in lines[0]
    assert [topic for topic in asyncio.run(list_topics(kafka_broker.bootstrap)) if topic.startswith(prefix)] == []


async def list_topics(bootstrap: str) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


def test_a_line_too_large_for_one_kafka_message_is_named_and_the_rest_is_sent(kafka_broker, tmp_path):
    prefix, app_id = unique_names()
    asyncio.run(create_input_topics(kafka_broker.bootstrap, prefix, app_id))
    huge = event("order.placed", "huge", outlet_id="o-1", notes="x" * 1_200_000)
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join([EVERY_TYPE[2][0], huge, EVERY_TYPE[8][0]]) + b"\n")

    result = run_send(str(events), "--kafka", kafka_broker.bootstrap, prefix=prefix)

    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "line 2 not sent" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].endswith("; NOT sent, over 1.0 MiB: line 2"), stderr
    records = asyncio.run(read_raw(kafka_broker.bootstrap, [prefix + "sales.orders", prefix + "sales.activities"]))
    assert [value for _, _, value in records[prefix + "sales.orders"]] == [EVERY_TYPE[2][0]]
    assert [value for _, _, value in records[prefix + "sales.activities"]] == [EVERY_TYPE[8][0]]
