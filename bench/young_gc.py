"""What the cyclic collector's young collections cost a live engine as outlet histories grow.

    .venv/bin/python bench/young_gc.py                        # 600,000 events, 7 days, 20,000 outlets
    .venv/bin/python bench/young_gc.py --events 1000000 --outlets 100000 --reps 1000

A young collection reads every element of every container allocated since the last one (to see
whether it is a container too: in a large heap, a cache miss each). An engine rebuilds some
tuples whole on each event -- an outlet's history on each order -- so what a young collection
reads grows with the histories. This applies generated live traffic (bench/heap.py's world,
every event inside every window) through one engine with the collector set as a running worker
sets it (its start-up heap frozen, young collections every 20,000 net allocations:
stream/core/gcpause.py), rolling up every 400 events as a flush does, and prints per share of events
the young and middle collections and their mean pause, and the CPU per event of the share's
second half, applied with the collector on, against its first half, applied with it off in the
same run (the ceiling here: the collector's share is the ratio).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import defaultdict
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from stream.core.gcpause import GcPauseRecorder, collect_young_less_often  # noqa: E402

from heap import engine_then_events  # noqa: E402  (bench/heap.py)
from replay import machine  # noqa: E402  (bench/replay.py: every bench prints the same line)

FLUSH_EVERY = 400  # events between roll-ups: ~0.1 s of a worker's traffic at 4,000 ev/s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=600_000)
    parser.add_argument("--share", type=int, default=100_000, help="events per printed line")
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    print(f"command: bench/young_gc.py --events {args.events} --share {args.share} --outlets {args.outlets} "
          f"--reps {args.reps} --days {args.days}")
    print(f"machine: {machine()}")

    warm_up = min(20_000, args.events // 10)
    engine, events = engine_then_events(warm_up, args.events, args.outlets, args.reps, args.days)
    pauses: dict[int, list[float]] = defaultdict(list)
    GcPauseRecorder(lambda generation, seconds: pauses[generation].append(seconds)).install()
    gc.collect()
    gc.freeze()  # as the worker does once it is up
    collect_young_less_often()

    def apply(share: list) -> float:
        started = time.process_time()
        for number, event in enumerate(share, 1):
            engine.apply(event)
            if number % FLUSH_EVERY == 0:
                engine.take_dirty()
        engine.take_dirty()
        return time.process_time() - started

    print(f"{'events applied':>15} {'young':>6} {'mean ms':>8} {'middle':>7} {'mean ms':>8} {'full':>5} "
          f"{'us/event':>9} {'collector off':>14} {'ratio':>6}")
    done = warm_up
    for start in range(0, len(events), args.share):
        # the first half of each share with the collector off (the ceiling), the second half with it on
        share = events[start:start + args.share]
        half = len(share) // 2
        gc.disable()
        off = apply(share[:half])
        gc.enable()
        pauses.clear()
        on = apply(share[half:])
        done += len(share)
        young, middle, full = pauses[0], pauses[1], pauses[2]
        per_on, per_off = on / max(1, len(share) - half) * 1e6, off / max(1, half) * 1e6
        print(f"{done:>15,} {len(young):>6} {1000 * sum(young) / max(1, len(young)):>8.2f} {len(middle):>7} "
              f"{1000 * sum(middle) / max(1, len(middle)):>8.2f} {len(full):>5} {per_on:>9.2f} {per_off:>14.2f} "
              f"{per_on / per_off:>6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
