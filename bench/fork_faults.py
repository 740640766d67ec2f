"""Page faults the engine takes per applied event after a fork: what a background save costs.

    .venv/bin/python bench/fork_faults.py                       # 400,000 events of state, 7 days, 20k outlets
    .venv/bin/python bench/fork_faults.py --state 1000000 --outlets 100000 --reps 1000

A background save (stream/snapshots.py BackgroundSaver) forks; afterwards every page the worker
writes for the first time -- an object's reference count, a dict's slot, a buffer's tail -- is a
copy-on-write fault, however little it writes there. This builds an engine from --state
generated events (replay, pinned clock), decodes the next events (untimed), and then, each time
in a fresh fork whose copy only sleeps (so every fault is the parent's), applies one share of
them and counts the parent's minor faults (getrusage) and wall time:

- the baseline: the same work with no fork, in the same run (faults for new memory only);
- apply: `KpiEngine.apply`, dedupe included, then the roll-up a flush does;
- the parts: dedupe (`Deduper.admit`) alone; apply with the dedupe bypassed, by event type;
  the roll-up of what that applied (`ScopeRollup.take_dirty`: one flush); a full collection;
- and the fork() call itself, three times (the worker's event loop stops for it).

Each part runs on events no other part saw, right after its own fork, so each figure is the
pages that part writes into first. The cost per fault is (time after a fork - time without) /
(faults after a fork - faults without), for the apply runs.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from stream.decode import Rejected, decode_event  # noqa: E402
from stream.engine import Family, family_of, partition_key  # noqa: E402
from stream.replay import replay_lines  # noqa: E402

from heap import generated_events  # noqa: E402  (bench/heap.py)
from replay import machine  # noqa: E402  (bench/replay.py: every bench prints the same line)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class AdmitAll:
    """Stands in for the deduper, to see what the rest of `apply` writes."""

    def admit(self, *_args) -> bool:
        return True


def measured(work: Callable[[], int], fork: bool) -> tuple[int, int, float]:
    """(faults, items, seconds) of `work`, run in this process after forking a copy that only
    sleeps (killed afterwards), or with no fork."""
    child = os.fork() if fork else None
    if child == 0:
        time.sleep(600)
        os._exit(0)
    faults, started = minor_faults(), time.perf_counter()
    items = work()
    seconds, faults = time.perf_counter() - started, minor_faults() - faults
    if child:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    return faults, items, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=int, default=400_000, help="events applied before the forks")
    parser.add_argument("--share", type=int, default=20_000, help="events per measured run")
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--days", type=int, default=7)
    args = parser.parse_args()
    print(f"command: bench/fork_faults.py --state {args.state} --share {args.share} --outlets {args.outlets} "
          f"--reps {args.reps} --days {args.days}")
    print(f"machine: {machine()}")

    shares = 4
    lines, settings = generated_events(args.state + shares * args.share, args.outlets, args.reps, args.days)
    engine, _report = replay_lines(iter(lines[:args.state]), settings, None)
    for family in Family:
        engine.vectors(family)
    later = []
    for raw in lines[args.state:]:
        try:
            later.append(decode_event(raw, engine.now_us, settings))
        except Rejected:
            pass
    del lines
    parts = [later[index::shares] for index in range(shares)]
    gc.collect()
    gc.freeze()  # what exists now is the state; the collector leaves it alone in the runs below
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    print(f"state: {args.state:,} events applied; process RSS {rss / 2**20:,.0f} MiB "
          f"({rss // os.sysconf('SC_PAGE_SIZE'):,} pages, the generated lines freed)")

    def apply(events: list) -> Callable[[], int]:
        def work() -> int:
            for event in events:
                engine.apply(event)
            for family in Family:
                engine.vectors(family)
            return len(events)
        return work

    def admit(events: list) -> Callable[[], int]:
        def work() -> int:
            for event in events:
                engine.deduper.admit(family_of(event), partition_key(event), event.event_id, event.ref_us)
            return len(events)
        return work

    def apply_bypassing_dedupe(events: list, kinds: set[str] | None = None) -> Callable[[], int]:
        def work() -> int:
            deduper, engine.deduper = engine.deduper, AdmitAll()
            try:
                chosen = [event for event in events if kinds is None or type(event).__name__ in kinds]
                for event in chosen:
                    engine.apply(event)
                return len(chosen)
            finally:
                engine.deduper = deduper
        return work

    def roll_up() -> int:
        return sum(len(engine.rollups[family].take_dirty()) for family in Family)

    def collect() -> int:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        return 1

    def show(label: str, figures: tuple[int, int, float], unit: str = "event") -> None:
        faults, items, seconds = figures
        print(f"  {label:<44} {faults:>8,} faults for {items:>6,} {unit}s: {faults / max(1, items):7.2f} per "
              f"{unit}, {seconds:.2f} s")

    half = len(parts[0]) // 2
    baseline = measured(apply(parts[0][:half]), fork=False)
    forked = measured(apply(parts[0][half:]), fork=True)
    show("apply + roll-up, no fork (baseline)", baseline)
    show("apply + roll-up, after a fork", forked)
    faults_per_event, seconds_per_event = baseline[0] / baseline[1], baseline[2] / baseline[1]
    extra_faults = forked[0] - faults_per_event * forked[1]
    extra_seconds = forked[2] - seconds_per_event * forked[1]
    print(f"  after a fork: {forked[0] / forked[1] / max(0.01, faults_per_event):.0f}x the faults per event of the "
          f"baseline, {forked[2] / forked[1] / seconds_per_event:.2f}x the time: "
          f"~{extra_seconds / max(1.0, extra_faults) * 1e6:.1f} us per extra fault")
    print("the parts, each after its own fork, on events no other part saw:")
    show("dedupe (Deduper.admit) alone", measured(admit(parts[1]), fork=True))
    show("apply with the dedupe bypassed", measured(apply_bypassing_dedupe(parts[1]), fork=True))
    show("the roll-up of what that applied (one flush)", measured(roll_up, fork=True), "dirty scope")
    for kinds in ({"OrderPlaced"}, {"VisitCompleted"}, {"LeadEvent"}, {"ActivityLogged"}, {"OutletEvent"}):
        show(f"  {'/'.join(sorted(kinds))} only, dedupe bypassed",
             measured(apply_bypassing_dedupe(parts[2], kinds), fork=True))
    show("a full collection of the cyclic GC", measured(collect, fork=True), "collection")
    forks = []
    for _ in range(3):
        started = time.perf_counter()
        child = os.fork()
        if child == 0:
            os._exit(0)
        forks.append(time.perf_counter() - started)
        os.waitpid(child, 0)
    print(f"fork() itself, in the parent, at this RSS: {', '.join(f'{s * 1000:.0f}' for s in forks)} ms "
          f"(the worker's event loop stops for it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
