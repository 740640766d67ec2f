"""Print a topic's messages as JSON lines: `python -m stream.devtools.tail --kafka HOST:PORT kpi.updates`.

Security (TLS, SASL) comes from the worker's variables: KAFKA_SECURITY_PROTOCOL and the rest."""

from __future__ import annotations

import argparse
import asyncio
import sys

import orjson


async def read_topic(bootstrap: str, topic: str, *, timeout_s: float, follow: bool, **security) -> list[dict]:
    """Every message of `topic` from the beginning (until idle for timeout_s unless follow)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None, **security)
    await consumer.start()
    out: list[dict] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(timeout_s * 1000))
            if not batch and not follow:
                break
            for records in batch.values():
                for record in records:
                    row = {
                        "partition": record.partition, "offset": record.offset,
                        "key": record.key.decode(errors="replace") if record.key is not None else None,
                        "value": _value(record.value),
                        "headers": {k: v.decode(errors="replace") for k, v in record.headers},
                    }
                    out.append(row)
                    if follow:
                        sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
                        sys.stdout.flush()
    finally:
        await consumer.stop()
    return out


def _value(raw: bytes | None):
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("topic")
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--follow", action="store_true")
    args = parser.parse_args()
    from stream.core.config import ServiceSettings

    security = ServiceSettings.from_env().kafka_client_options()
    rows = asyncio.run(read_topic(args.kafka, args.topic, timeout_s=3.0, follow=args.follow, **security))
    if not args.follow:
        for row in rows:
            sys.stdout.buffer.write(orjson.dumps(row) + b"\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
