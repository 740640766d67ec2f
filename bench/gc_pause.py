"""How long one full cyclic-GC collection stops a worker holding engine state (issue 7, latency).

    .venv/bin/python bench/gc_pause.py                       # 200,000 events, 20,000 outlets
    .venv/bin/python bench/gc_pause.py --events 1000000 --outlets 200000

A full (generation 2) collection walks every object the collector tracks and holds the GIL
meanwhile: the worker's event loop, its consumer and its publication all stand still. Python
runs one whenever the tracked objects grew by a quarter since the last, so a worker whose state
grows runs them regularly (13 in a 60 s run of bench/latency.py at 1,600 ev/s, 0.23 s each on
average, before the engine's state was made untrackable; the worker's histogram
`kpi_stream_gc_pause_seconds` shows them in production).

The run: generate events (bench/throughput.py's mix, seed 7), apply all but the last 5,000 with
the engine (as `kpi-stream replay` does), collect once (what the collector drops from its walk
after a first pass, it drops), apply the last 5,000 (new state, as a running worker has), then
time one full collection, then the least of five more with nothing new (what every later full
collection costs while the state stands still). The floor is a full collection in the same process
before any engine state existed (the interpreter, faust-free imports; the generated lines are a
tuple of bytes, which the collector stops walking).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from throughput import bench_config, machine  # noqa: E402

from stream import generator  # noqa: E402
from stream.core.config import ClockSetting, KpiSettings  # noqa: E402
from stream.core.decode import Rejected, decode_event  # noqa: E402
from stream.replay import replay_lines  # noqa: E402

FRESH_EVENTS = 5_000
SETTLED_RUNS = 5


def timed_full_collection() -> float:
    started = time.perf_counter()
    gc.collect()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=None,
                        help="span of the generated event times (default: the generator's 90 days; 7: live traffic)")
    args = parser.parse_args()
    config = bench_config(args.events, args.outlets, args.days)
    # A tuple of bytes drops out of the collector's walk: the floor is the interpreter's own heap.
    lines = tuple(message.value for message in generator.generate(config))
    now_us = generator.now_us(config)
    settings = KpiSettings(clock=ClockSetting("pinned", now_us))

    gc.collect()
    floor = min(timed_full_collection() for _ in range(3))
    tracked_before = len(gc.get_objects())

    engine, _report = replay_lines(lines[:-FRESH_EVENTS], settings, None)
    gc.collect()
    for raw in lines[-FRESH_EVENTS:]:
        try:
            engine.apply(decode_event(raw, now_us, settings))
        except Rejected:
            pass
    pause = timed_full_collection()
    settled = min(timed_full_collection() for _ in range(SETTLED_RUNS))
    tracked = len(gc.get_objects()) - tracked_before
    outlets = len(engine.outlets)

    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(f"machine: {machine()}")
    print(f"state: {len(lines):,} events applied, {outlets:,} outlets, {len(engine.leads.leads):,} leads; "
          f"objects tracked by the cyclic GC beyond the floor: {tracked:,} ({tracked / max(outlets, 1):.1f} per outlet)")
    print(f"floor (full collection before any engine state): {floor * 1000:8.1f} ms")
    print(f"full collection after {FRESH_EVENTS:,} fresh events: {pause * 1000:8.1f} ms   "
          f"ratio to the floor {pause / floor:.1f}x")
    print(f"settled: a full collection with nothing new (least of {SETTLED_RUNS}): {settled * 1000:8.1f} ms   "
          f"ratio to the floor {settled / floor:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
