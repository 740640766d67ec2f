"""The engine's heap per event of history: what a worker holds for the events inside its windows.

    .venv/bin/python bench/heap.py                     # 400,000 events over 90 days, 40k outlets, 400 reps
    .venv/bin/python bench/heap.py --events 1000000 --outlets 100000 --reps 1000

The per-outlet memory target (bench/scaling.py) leaves out the buffers that grow with events; this
measures them. Events are generated (untimed) over --days, longer than the longest window (60 d),
so the state is the steady one a worker holds: every delta still to come for the last 60 days,
the dedupe ids of the last 7 (in replay every id is remembered: the reference instant of each
event is the pinned clock), every lead. They are replayed as `kpi-stream replay` does (decode,
apply, pinned clock at the period's end), then rolled up once (a worker rolls up every interval,
so due changes do not pile up). Two fresh processes:

1. untraced: RSS growth from before the replay to after it (the lines freed, a full collection),
   per event and per outlet, and the replay's speed;
2. traced (tracemalloc, 1 frame): the live heap by the module that allocated it -- windows (deltas
   waiting for their slot), leads, outlets / outlet_packing / cold_outlets (outlet state), engine
   (dedupe ids), decode (strings kept from events: ids) -- and the top lines.

The yardstick printed with each figure is the events' own JSON (bytes per event): a summary that
holds more than its input is worth looking at.
"""

from __future__ import annotations

import argparse
import collections
import gc
import json
import subprocess
import sys
import time
from pathlib import Path

from harness import bench_config, machine, rss_bytes  # first: it puts the repository on sys.path
from stream.core.config import ClockSetting, KpiSettings
from stream.core.engine import Family
from stream.devtools import generator
from stream.replay import replay_lines


def generated_events(events: int, outlets: int, reps: int, days: int) -> tuple[list[bytes], KpiSettings]:
    """Generated event lines (bench_config's traffic) and settings with the clock pinned at the
    generated period's end."""
    config = bench_config(events, outlets, days, reps)
    lines = [message.value for message in generator.generate(config)]
    return lines, KpiSettings(clock=ClockSetting("pinned", generator.now_us(config)))


def measure(args: argparse.Namespace, traced: bool) -> dict:
    lines, settings = generated_events(args.events, args.outlets, args.reps, args.days)
    line_bytes = sum(len(line) for line in lines)
    gc.collect()
    before = rss_bytes()
    if traced:
        import tracemalloc
        tracemalloc.start(1)
    started = time.process_time()
    engine, report = replay_lines(iter(lines), settings, None)
    cpu = time.process_time() - started
    for family in Family:
        engine.vectors(family)  # roll the due changes up, as a worker's flush does
    del lines
    gc.collect()
    result = {"events": report.lines, "applied": report.applied, "line_bytes": line_bytes, "cpu": cpu,
              "rss": rss_bytes() - before, "leads": len(engine.leads.leads)}
    if traced:
        stats = tracemalloc.take_snapshot().statistics("lineno")
        by_module: collections.Counter = collections.Counter()
        for stat in stats:
            by_module[Path(stat.traceback[0].filename).stem] += stat.size
        result["traced"] = sum(stat.size for stat in stats)
        result["by_module"] = by_module.most_common(8)
        result["top"] = [(f"{Path(s.traceback[0].filename).name}:{s.traceback[0].lineno}", s.size, s.count)
                         for s in stats[:8]]
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--outlets", type=int, default=40_000)
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--child", choices=("untraced", "traced"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args, args.child == "traced")))
        return 0

    print(f"command: bench/heap.py --events {args.events} --outlets {args.outlets} --reps {args.reps} --days {args.days}")
    print(f"machine: {machine()}")
    runs = {}
    for kind in ("untraced", "traced"):
        child = subprocess.run([sys.executable, __file__, "--events", str(args.events), "--outlets", str(args.outlets),
                                "--reps", str(args.reps), "--days", str(args.days), "--child", kind],
                               check=True, capture_output=True, text=True)
        runs[kind] = json.loads(child.stdout.strip().splitlines()[-1])
    plain, traced = runs["untraced"], runs["traced"]
    n = plain["events"]
    per_line = plain["line_bytes"] / n
    print(f"events: {n:,} ({plain['applied']:,} applied) over {args.days} d, {args.outlets:,} outlets, {args.reps:,} reps, {plain['leads']:,} leads; "
          f"their JSON {per_line:.0f} B/event")
    print(f"replay: {n / plain['cpu']:,.0f} events/s (CPU)")
    print(f"RSS growth: {plain['rss'] / 2**20:,.0f} MiB = {plain['rss'] / n:,.0f} B/event "
          f"({plain['rss'] / n / per_line:.2f} x the event's JSON), {plain['rss'] / args.outlets:,.0f} B/outlet")
    print(f"traced heap: {traced['traced'] / 2**20:,.0f} MiB = {traced['traced'] / n:,.0f} B/event; by module:")
    for module, size in traced["by_module"]:
        print(f"  {module:<16} {size / 2**20:8.1f} MiB {size / n:7.0f} B/event")
    print("top lines:")
    for where, size, count in traced["top"]:
        print(f"  {where:<24} {size / 2**20:8.1f} MiB {count:>10,} blocks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
