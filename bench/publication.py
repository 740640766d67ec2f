"""What publication costs per second of traffic, by the size of the field force (issue 7).

    .venv/bin/python bench/publication.py                       # reps 60 and 3,000 at 2,500 ev/s
    .venv/bin/python bench/publication.py --reps 60,1000,3000 --seconds 40
    .venv/bin/python bench/publication.py --reps 60 --rate 2430 --interval 0.1   # ten rounds a second

The scope stage republishes every scope whose vector moved, once per interval, so the number of
KPI updates a second follows the number of scopes -- reps above all -- more than the event rate.
This runs live traffic (every event inside every window, pinned clock) through one engine and,
once per `--interval` simulated seconds of `--rate` events a second (one publication round:
`--interval 0.1` for KPI_PUBLISH_INTERVAL=0.1), evaluates every dirty scope as the worker does
(only the groups that moved) and publishes its values three ways, each timed on its own and
each with its own memory of what it sent:

  ceiling   orjson.dumps of each update's message dict: the least a JSON message costs
  readable  stream/stages/updates.py's functions as the worker called them before stream/stages/publication.py:
            update_key, the change check, encode(update_message(...)), cloudevent_headers, Outgoing
  worker    stream/stages/publication.py's Publisher (what the worker runs now)

Printed per rep count: updates a second and per event, us per update for each way (CPU time of
the publishing only, with the cyclic garbage collector paused while it runs: what a collection
costs depends on the whole heap, not on who allocated last, and bench/gc_pause.py measures it)
and their ratios, and what a second of this traffic costs the worker's main thread in
publication alone; and, timed apart, evaluating the dirty scopes' values before they are
published (`evaluate_family`), per update sent. Not included:
Kafka's batch append (~1.4 us an update), Redis (~2 us to pack each field), gauges of rep scopes
(not exported by default).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from prometheus_client import CollectorRegistry  # noqa: E402

from stream import generator  # noqa: E402
from stream.kafka.batches import Outgoing, key_partition  # noqa: E402
from stream.core.config import ClockSetting, KpiSettings  # noqa: E402
from stream.core.decode import Rejected, decode_event  # noqa: E402
from stream.core.engine import KpiEngine, evaluate_family  # noqa: E402
from stream.stages.publication import Publisher, RoundOutput  # noqa: E402
from stream.worker.sinks import KpiGauges  # noqa: E402
from stream.stages.updates import cloudevent_headers, encode, round_stamp, update_key, update_message  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from throughput import machine  # noqa: E402

PARTITIONS = 4
EXPORTED = ("global", "region", "territory")


def publish_ceiling(memory: dict, scope, values, stamp) -> int:
    count = 0
    for value in values:
        numbers = (value.value, value.numerator, value.denominator)
        identity = (scope, value.kpi, value.window, value.horizon, value.kind)
        if memory.get(identity) == numbers:
            continue
        memory[identity] = numbers
        orjson.dumps(update_message(value, stamp))
        count += 1
    return count


def publish_readable(memory: dict, gauges: KpiGauges, values, stamp, outgoing: list, redis: dict) -> int:
    count = 0
    for value in values:
        key = update_key(value)
        numbers = (value.value, value.numerator, value.denominator)
        if memory.get(key) == numbers:
            continue
        memory[key] = numbers
        body = encode(update_message(value, stamp))
        key_bytes = key.encode()
        outgoing.append(Outgoing(key_partition(key_bytes, PARTITIONS), key_bytes, body, cloudevent_headers(key, stamp)))
        redis[key] = body
        gauges.set(value)
        count += 1
    return count


def run(reps: int, outlets: int, rate: int, seconds: int, interval: float = 1.0) -> dict:
    config = generator.GeneratorConfig(seed=7, events=rate * seconds, outlets=outlets, reps=reps, days=7,
                                       duplicate_fraction=0.0, malformed_fraction=0.0)
    now = generator.now_us(config)
    settings = KpiSettings(clock=ClockSetting("pinned", now))
    messages = [m.value for m in generator.generate(config)]
    engine = KpiEngine(settings, now)
    stamp = round_stamp(now, now + 412_000, "/kpi-stream/bench")
    previous: dict = {}
    ceiling_memory: dict = {}
    readable_memory: dict = {}
    readable_gauges = KpiGauges(CollectorRegistry(), EXPORTED)
    publisher = Publisher(KpiGauges(CollectorRegistry(), EXPORTED))
    spent = {"ceiling": 0.0, "readable": 0.0, "worker": 0.0, "evaluation": 0.0}
    counts = {"ceiling": 0, "readable": 0, "worker": 0}
    measured_seconds = 0.0
    clock = time.process_time
    per_round = max(1, round(rate * interval))
    rounds = -(-len(messages) // per_round)
    for number, start in enumerate(range(0, len(messages), per_round)):
        for raw in messages[start:start + per_round]:
            try:
                engine.apply(decode_event(raw, now, settings))
            except Rejected:
                pass
        dirty = engine.take_dirty()
        # the first half onboards outlets and meets most keys for the first time: not the steady
        # state timed here
        timed = number >= rounds // 2
        measured_seconds += timed * interval
        gc.disable()
        started = clock()
        scopes = []
        for family, scope, vector in dirty:
            scope_key = (family.value, scope[0], scope[1])
            values = evaluate_family(settings, engine.layouts, family, scope, vector, now, previous.get(scope_key))
            previous[scope_key] = tuple(vector)
            scopes.append((scope_key, values))
        spent["evaluation"] += (clock() - started) * timed
        started = clock()
        count = sum(publish_ceiling(ceiling_memory, key, values, stamp) for key, values in scopes)
        spent["ceiling"] += (clock() - started) * timed
        counts["ceiling"] += count * timed
        outgoing: list = []
        redis: dict = {}
        started = clock()
        count = sum(publish_readable(readable_memory, readable_gauges, values, stamp, outgoing, redis)
                    for _, values in scopes)
        spent["readable"] += (clock() - started) * timed
        counts["readable"] += count * timed
        started = clock()
        out = RoundOutput(stamp, PARTITIONS)
        count = sum(publisher.publish(key, values, out) for key, values in scopes)
        spent["worker"] += (clock() - started) * timed
        counts["worker"] += count * timed
        gc.enable()
    assert counts["readable"] == counts["worker"] == counts["ceiling"], counts
    return {"updates": counts["worker"], "seconds": measured_seconds, "keys": len(publisher.last),
            **{f"us_{way}": spent[way] / counts[way] * 1e6 for way in counts},
            "us_evaluation": spent["evaluation"] / max(1, counts["worker"]) * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", default="60,3000", help="comma-separated rep counts")
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=2_500, help="events per simulated second")
    parser.add_argument("--seconds", type=int, default=60, help="simulated seconds (the first half untimed)")
    parser.add_argument("--interval", type=float, default=1.0, help="simulated seconds per publication round")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"live traffic: {args.rate} ev/s for {args.seconds} simulated s, {args.outlets} outlets, one publication "
          f"round per {args.interval} simulated s (KPI_PUBLISH_INTERVAL), {PARTITIONS} kpi.updates partitions")
    for reps in (int(r) for r in args.reps.split(",")):
        r = run(reps, args.outlets, args.rate, args.seconds, args.interval)
        per_second = r["updates"] / r["seconds"]
        print(f"reps {reps:5d}: {r['keys']:7d} keys, {per_second:8.0f} updates/s ({per_second / args.rate:5.2f} per event); "
              f"us per update: ceiling {r['us_ceiling']:5.2f}, readable {r['us_readable']:5.2f}, "
              f"worker {r['us_worker']:5.2f} (worker/readable {r['us_worker'] / r['us_readable']:4.2f}, "
              f"worker/ceiling {r['us_worker'] / r['us_ceiling']:4.2f}); "
              f"publication alone: {per_second * r['us_worker'] / 1e6:4.2f} of a core "
              f"(readable {per_second * r['us_readable'] / 1e6:4.2f}); evaluating the dirty scopes' values "
              f"before it: {r['us_evaluation']:5.2f} us per update sent, "
              f"{per_second * r['us_evaluation'] / 1e6:4.2f} of a core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
