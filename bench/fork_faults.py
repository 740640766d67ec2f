"""Page faults the engine takes per applied event after a fork: what a background save costs.

    .venv/bin/python bench/fork_faults.py                       # 400,000 events of state, 7 days, 20k outlets
    .venv/bin/python bench/fork_faults.py --state 1000000 --outlets 100000 --reps 1000

A background save (stream/worker/snapshots.py BackgroundSaver) forks; afterwards every page the worker
writes for the first time -- an object's reference count, a dict's slot, a buffer's tail -- is a
copy-on-write fault, however little it writes there. This builds an engine from --state
generated events (replay, pinned clock), decodes the next events (untimed), and then, each time
in a fresh fork whose copy only sleeps (so every fault is the parent's), applies one share of
them and counts the parent's minor faults (getrusage) and wall time:

- the baseline: the same work with no fork, in the same run (faults for new memory only);
- apply: `KpiEngine.apply`, dedupe included, then the roll-up a flush does;
- the parts: dedupe (`Deduper.admit`) alone; apply with the dedupe bypassed, by event type;
  the roll-up of what that applied (`ScopeRollup.take_dirty`: one flush); a full collection;
- and the fork() call itself, three times (the worker's event loop stops for it);
- with --alternatives, three ways to move the copying off the event loop, each on its own share
  of events, against "after a fork": a thread of this process busy on another core meanwhile (a
  stand-in for the worker's consumer thread: is a fault dearer when the kernel must flush a
  sibling's TLB?); the copy first write-faulting every resident page of its own
  (madvise MADV_POPULATE_WRITE: the copy takes the new pages and this process keeps its
  originals); a thread of this process doing the same (it takes the copies in its place).

Each part runs on events no other part saw, right after its own fork, so each figure is the
pages that part writes into first. The cost per fault is (time after a fork - time without) /
(faults after a fork - faults without), for the apply runs.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import hashlib
import mmap
import os
import resource
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

from stream.core.engine import Family, family_of, partition_key  # noqa: E402

from heap import engine_then_events, rss_bytes  # noqa: E402  (bench/heap.py)
from replay import machine  # noqa: E402  (bench/replay.py: every bench prints the same line)


class AdmitAll:
    """Stands in for the deduper, to see what the rest of `apply` writes."""

    def admit(self, *_args) -> bool:
        return True


MADV_POPULATE_WRITE = 23  # linux/mman.h, Linux 5.14


def write_fault_resident_pages(stop: threading.Event | None = None) -> int:
    """Bytes of this process's anonymous and heap memory write-faulted without a write: every
    resident page (mincore) asked for MADV_POPULATE_WRITE, 1 MiB at a time. After a fork, the
    process that calls this takes a private copy of each page it still shares."""
    libc = ctypes.CDLL(None, use_errno=True)  # its calls release the interpreter lock
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p)
    page, chunk, done = mmap.PAGESIZE, 1 << 20, 0
    residency = ctypes.create_string_buffer(chunk // page)
    with open("/proc/self/maps") as maps:
        regions = [line.split(maxsplit=5) for line in maps]
    for fields in regions:
        if fields[1] != "rw-p" or (len(fields) == 6 and fields[5].strip() not in ("", "[heap]")):
            continue
        start, end = (int(bound, 16) for bound in fields[0].split("-"))
        for address in range(start, end, chunk):
            if stop is not None and stop.is_set():
                return done
            length = min(chunk, end - address)
            if libc.mincore(address, length, residency) != 0:
                continue
            resident = residency.raw[:length // page]
            index = 0
            while index < len(resident):
                if not resident[index] & 1:
                    index += 1
                    continue
                run_end = index + 1
                while run_end < len(resident) and resident[run_end] & 1:
                    run_end += 1
                if libc.madvise(address + index * page, (run_end - index) * page, MADV_POPULATE_WRITE) == 0:
                    done += (run_end - index) * page
                index = run_end
    return done


def busy_sibling(stop: threading.Event) -> None:
    """Keeps a thread of this process on a core, mostly outside the interpreter lock."""
    block = bytes(8 << 20)
    while not stop.is_set():
        hashlib.sha256(block).digest()


def measured(work: Callable[[], int], fork: bool, copy_takes_pages: bool = False,
             beside: Callable[[threading.Event], object] | None = None) -> tuple[int, int, float, float]:
    """(faults, items, seconds, seconds in the kernel) of `work`, run in this process after
    forking a copy that only sleeps (killed afterwards), or with no fork. `copy_takes_pages`: the
    copy first write-faults its resident pages while this process goes on; `beside`: run on a
    thread of this process from the fork until `work` ends."""
    child = os.fork() if fork else None
    if child == 0:
        if copy_takes_pages:
            write_fault_resident_pages()
        time.sleep(600)
        os._exit(0)
    stop = threading.Event()
    thread = threading.Thread(target=beside, args=(stop,), daemon=True) if beside else None
    if thread:
        thread.start()
    # this thread's: the work's faults and kernel time, not those of a thread beside it
    usage, started = resource.getrusage(resource.RUSAGE_THREAD), time.perf_counter()
    items = work()
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_THREAD)
    if thread:
        stop.set()
        thread.join()
    if child:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    return after.ru_minflt - usage.ru_minflt, items, seconds, after.ru_stime - usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=int, default=400_000, help="events applied before the forks")
    parser.add_argument("--share", type=int, default=20_000, help="events per measured run")
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=60)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--alternatives", action="store_true",
                        help="also time three ways of moving the copying off the event loop (see above)")
    args = parser.parse_args()
    print(f"command: bench/fork_faults.py --state {args.state} --share {args.share} --outlets {args.outlets} "
          f"--reps {args.reps} --days {args.days}{' --alternatives' if args.alternatives else ''}")
    print(f"machine: {machine()}")

    shares = 4
    engine, later = engine_then_events(args.state, args.state + shares * args.share, args.outlets, args.reps,
                                       args.days)
    parts = [later[index::shares] for index in range(shares)]
    gc.collect()
    gc.freeze()  # what exists now is the state; the collector leaves it alone in the runs below
    rss = rss_bytes()
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

    def show(label: str, figures: tuple[int, int, float, float], unit: str = "event") -> None:
        faults, items, seconds, system = figures
        print(f"  {label:<44} {faults:>8,} faults for {items:>6,} {unit}s: {faults / max(1, items):7.2f} per "
              f"{unit}, {seconds:.2f} s ({system:.2f} s in the kernel)")

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
    if args.alternatives:
        print("moving the copying off the event loop: apply + roll-up, each after its own fork, on as many events:")
        quarter = len(parts[3]) // 4
        plain = None
        for number, (label, options) in enumerate((
                ("the copy only sleeps (as above)", {}),
                ("a sibling thread busy on another core", {"beside": busy_sibling}),
                ("the copy write-faulting its pages first", {"copy_takes_pages": True}),
                ("a thread here write-faulting them", {"beside": write_fault_resident_pages}))):
            figures = measured(apply(parts[3][number * quarter:(number + 1) * quarter]), fork=True, **options)
            show(label, figures)
            if plain is None:
                plain = figures
            else:
                print(f"  {'':<44} {figures[2] / plain[2]:.2f}x the time, {figures[3] / max(1e-9, plain[3]):.2f}x "
                      f"the kernel time of this thread, against the copy that only sleeps")
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
