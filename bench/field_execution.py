"""Per-event engine cost of a world with spec 10 traffic (beat plans, cancellations, repeated
order ids, returns) against today's v1 mix, in the same run.

    .venv/bin/python bench/field_execution.py --events 200000

Both files are generated with the same seed and size (`GeneratorConfig.field_execution` on and
off), decoded once, and applied to a fresh engine with the clock pinned at the generator's end,
alternately, `--pairs` times; prints us per event for each and the median ratio (field / v1).
KPI settings come from the environment, as for `kpi-stream replay`.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from harness import bench_config, command, input_messages, machine  # first: puts the repository on sys.path
from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.engine import KpiEngine
from stream.core.gcpause import cyclic_gc_paused
from stream.devtools import generator


def decoded(config: generator.GeneratorConfig, settings: KpiSettings, now: int) -> list:
    events = []
    for message in input_messages(config):
        try:
            events.append(decode_event(message.value, now, settings))
        except Rejected:
            pass
    return events


def applied_us_per_event(events: list, settings: KpiSettings, now: int) -> float:
    with cyclic_gc_paused():
        engine = KpiEngine(settings, now)
        started = time.perf_counter()
        for event in events:
            engine.apply(event)
        return (time.perf_counter() - started) / len(events) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    print(command())
    print(machine())
    config = bench_config(args.events, args.outlets)
    now = generator.now_us(config)
    settings = dataclasses.replace(KpiSettings.from_env(), clock=ClockSetting("pinned", now))
    field = decoded(config, settings, now)
    v1 = decoded(dataclasses.replace(config, field_execution=False), settings, now)
    kinds = {}
    for event in field:
        kinds[event.type] = kinds.get(event.type, 0) + 1
    print(f"events: field {len(field):,} ({', '.join(f'{k} {n:,}' for k, n in sorted(kinds.items()) if k in generator_types())}), v1 {len(v1):,}")
    ratios = []
    for pair in range(args.pairs):
        a = applied_us_per_event(v1, settings, now)
        b = applied_us_per_event(field, settings, now)
        ratios.append(b / a)
        print(f"pair {pair + 1}: v1 {a:.2f} us/event, field execution {b:.2f} us/event, ratio {b / a:.3f}")
    print(f"median ratio field/v1: {statistics.median(ratios):.3f}")
    return 0


def generator_types() -> set[str]:
    return {"visit.planned", "order.cancelled", "order.returned"}


if __name__ == "__main__":
    raise SystemExit(main())
