"""Every rejection reason of spec section 4 reaches kpi.deadletter from a running worker, with the
exact original bytes and source coordinates; valid events in the same batch do not."""

from __future__ import annotations

import asyncio
import base64
import time

import orjson
import pytest

from tests.e2e.harness import WorkerProcess, counter_total, unique_names, wait_until, worker_env

pytestmark = pytest.mark.integration

AS_OF = "2026-11-24T12:00:00Z"


def order(event_id: str, **changes) -> dict:
    doc = {"event_id": event_id, "type": "order.placed", "occurred_at": "2026-11-24T10:00:00Z", "outlet_id": "o1",
           "order_id": "x1", "amount": "12.50", "currency": "USD", "lines": 2}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


BAD = [
    ("oversized", b'{"event_id":"big","pad":"' + b"x" * 70_000 + b'"}'),
    ("malformed_json", b'{"event_id": "broken"'),
    ("malformed_json", b"\xff\xfe not utf-8 \x80"),
    ("not_an_object", b"[1, 2, 3]"),
    ("missing_field", orjson.dumps({k: v for k, v in order("nt").items() if k != "type"})),
    ("bad_type", orjson.dumps(order("bt", type=7))),
    ("unknown_type", orjson.dumps(order("ut", type="order.voided"))),
    ("missing_field", orjson.dumps(order("mf", outlet_id=None))),
    ("bad_type", orjson.dumps(order("bty", lines="2"))),
    ("bad_value", orjson.dumps(order("bv", lines=0))),
    ("bad_value", orjson.dumps(order("neg", amount=-1))),
    ("bad_timestamp", orjson.dumps(order("ts", occurred_at="yesterday"))),
    ("currency_mismatch", orjson.dumps(order("cur", currency="EUR"))),
    ("future_event", orjson.dumps(order("fut", occurred_at="2026-11-24T12:10:00Z"))),
]
GOOD = [orjson.dumps(order(f"ok{i}", outlet_id=f"o{i}", order_id=f"g{i}")) for i in range(5)]


async def _produce_each(bootstrap: str, topic: str, values: list[bytes]) -> list[tuple[int, int]]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=1_048_576)
    await producer.start()
    try:
        coordinates = []
        for value in values:
            try:  # keyed as producers should: by outlet_id (a wrong key would be re-keyed, consumed twice)
                key = orjson.loads(value)["outlet_id"].encode()
            except Exception:  # noqa: BLE001 - the bad ones: any key
                key = b"o1"
            meta = await producer.send_and_wait(topic, key=key, value=value)
            coordinates.append((meta.partition, meta.offset))
        return coordinates
    finally:
        await producer.stop()


def test_each_rejection_reason_lands_in_the_dead_letter_topic_with_the_original_bytes(
        kafka_broker, redis_server, tmp_path):
    from stream.devtools.tail import read_topic

    prefix, app_id = unique_names()
    env = worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state", KPI_CLOCK=AS_OF)
    proc = WorkerProcess(env, tmp_path / "worker.log").start()
    try:
        wait_until(lambda: proc.get("/ready")[0] == 200 or [proc.log_tail(5)], timeout=90, what="worker ready")
        values = [raw for _, raw in BAD] + GOOD
        coordinates = asyncio.run(_produce_each(kafka_broker.bootstrap, prefix + "sales.orders", values))

        def dead_letters():
            return asyncio.run(read_topic(kafka_broker.bootstrap, prefix + "kpi.deadletter", timeout_s=2.0, follow=False))

        wait_until(lambda: len(dead_letters()) >= len(BAD) or [f"{len(dead_letters())} of {len(BAD)}"],
                   timeout=60, what="every bad event dead-lettered")
        time.sleep(2)
        records = [row["value"] for row in dead_letters()]
        assert len(records) == len(BAD), "valid events must not be dead-lettered"
        by_offset = {(r["source"]["partition"], r["source"]["offset"]): r for r in records}
        for (reason, raw), (partition, offset) in zip(BAD, coordinates):
            record = by_offset[(partition, offset)]
            assert record["reason"] == reason, record
            assert record["source"]["topic"] == prefix + "sales.orders"
            assert record["detail"]
            if record.get("value_encoding") == "base64":
                assert base64.b64decode(record["value_base64"]) == raw
            else:
                assert record["value"].encode() == raw

        status, body = proc.get("/metrics")
        text = body.decode()
        for reason in {r for r, _ in BAD}:
            expected = sum(1 for r, _ in BAD if r == reason)
            assert counter_total(text, "kpi_stream_deadletters_total", reason=reason) == expected
        assert counter_total(text, "kpi_stream_events_consumed_total") == len(values)
        assert proc.alive()
    finally:
        proc.stop()
