"""Issue 7's scaling questions, on the pure engine path (decode + KpiEngine.apply), no broker.

    .venv/bin/python bench/scaling.py                 # 500,000 timed events per run (~10 min busy)
    .venv/bin/python bench/scaling.py --events 1000000  # ~16 min on 2 busy cores
    .venv/bin/python bench/scaling.py --quick         # 50,000 events, 10k vs 100k outlets

The loop timed is the one `kpi-stream replay` runs (stream/replay.py `replay_lines`):
decode_event(raw, ref_us, settings), engine.apply(event), clock.observe(...), pinned clock.
Events are generated beforehand (untimed, bench/throughput.py's mix: late 3 %, no duplicates,
no malformed) into files; every measurement then runs in a fresh subprocess of this script.

Runs (each a fresh process; per-event cost is CPU time of the timed loop / events):
  1. windows: the same 10k-outlet events with KPI_WINDOWS=7d only vs 60d only
     (and the default 7d,30d,60d for reference).                        target: 60d <= 1.10 x 7d
  2. outlets: 10k vs 1M outlets, default windows. The generator emits one outlet.onboarded per
     (95 % of) outlets on top of the traffic, so those are applied first, untimed (the "engine
     already tracks N outlets" state); the timed part is the same number of other events
     (orders, visits, leads, activities, outlet updates) in arrival order.  target: <= 1.20 x
  3. memory: RSS growth of a fresh process from before to after building the 1M-outlet state,
     per tracked outlet; the buffers that grow with events rather than outlets (dedupe ids,
     pending slot deltas, scope vectors, lead/activity state) are sized by walking them and
     subtracted to give "beyond buffers".                              target: <= 200 B/outlet
  4. rebuild: the worker's rebuild loop (`apply_fact_batches`, stream/worker/recovery.py) over the 1M-outlet state's
     facts (every accepted event, stored as the worker stores them: [partition, ref_us, raw]),
     through to final values (advance + roll-up + evaluate), checked equal to run 2's values.
     CPU part only: reading the facts changelog from Kafka is not included.  target: <= 10 s
  5. restart from a snapshot: the rebuilt state saved as the worker saves it at a stop
     (stream/worker/snapshots.py), then, in a fresh process, taken, checked against the facts-table
     keys it covers, and brought to final values, checked equal to run 2's.   target: <= 10 s

Ratios and the rebuild verdict use CPU time (time.process_time), which a busy machine inflates
far less than wall time; wall figures are printed next to them.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


from harness import bench_config, command, machine, rss_bytes  # first: it puts the repository on sys.path
from stream.core.clock import clock_for, reference_instant_us
from stream.core.config import ClockSetting, KpiSettings, parse_duration_list
from stream.core.decode import Rejected, decode_event
from stream.core.engine import Family, KpiEngine
from stream.devtools import generator
from stream.stages.updates import update_key
from stream.worker.snapshots import (
    CoveredBatches, EngineSnapshot, SnapshotShelf, engine_fingerprint, missing_batches,
)

ONBOARDED = b'"type":"outlet.onboarded"'


def settle_rss() -> int:
    gc.collect()
    return rss_bytes()


def allocator_bytes() -> dict:
    """Where the process's heap memory is: pymalloc's arenas (small objects) split into live blocks
    and the free room it holds (free blocks, unused pools, headers, alignment), and glibc's heap
    (larger allocations) split into in use and free. RSS growth minus the live parts is slack."""
    import ctypes
    import re

    with tempfile.TemporaryFile(mode="w+") as capture:
        saved = os.dup(2)
        sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            sys._debugmallocstats()  # writes to the C stderr
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read()

    def figure(pattern: str) -> int:
        found = re.search(pattern + r"\s*=\s*([\d,]+)", text)
        return int(found.group(1).replace(",", "")) if found else 0
    arenas = figure(r"arenas \* \d+ bytes/arena")
    live_blocks = figure(r"# bytes in allocated blocks")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    info = libc.mallinfo2()
    return {"pymalloc_arenas": arenas, "pymalloc_live": live_blocks, "malloc_heap": info.arena,
            "malloc_live": info.uordblks, "malloc_free": info.fordblks, "malloc_mmapped": info.hblkhd}


def settings_for(windows: str, config: generator.GeneratorConfig) -> KpiSettings:
    return KpiSettings(windows_seconds=parse_duration_list(windows),
                       clock=ClockSetting("pinned", generator.now_us(config)))


def values_digest(engine: KpiEngine) -> tuple[int, str]:
    values = engine.all_values()
    digest = hashlib.sha256()
    for key, value in sorted((update_key(v), (v.value, v.numerator, v.denominator)) for v in values):
        digest.update(f"{key}={value!r}\n".encode())
    return len(values), digest.hexdigest()[:16]


# -- children -------------------------------------------------------------------------------------

def child_generate(args) -> dict:
    """Exactly args.events non-onboarding events, plus the generator's onboarding events."""
    probe = bench_config(0, args.outlets)
    onboarding = sum(o.onboards for o in generator.World(probe).outlets)  # exact count
    config = bench_config(args.events + onboarding, args.outlets)
    count = generator.write_jsonl(generator.generate(config), Path(args.file))
    return {"lines": count, "onboarding": onboarding}


def read_file(path: str) -> list[bytes]:
    with open(path, "rb") as handle:
        return [line[:-1] if line.endswith(b"\n") else line for line in handle]


class GcTimer:
    """CPU seconds spent in the cyclic garbage collector (it grows with the heap, so with state)."""

    def __init__(self) -> None:
        self.seconds, self._start = 0.0, 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.seconds += time.process_time() - self._start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def apply_loop(lines: list[bytes], engine: KpiEngine, settings: KpiSettings, clock) -> tuple[int, int]:
    """stream/replay.py `replay_lines`' hot path: decode, apply, observe (counters left out)."""
    rejected = 0
    for raw in lines:
        try:
            event = decode_event(raw, reference_instant_us(settings.clock, None), settings)
        except Rejected:
            rejected += 1
            continue
        engine.apply(event)
        clock.observe(event.occurred_us)
    return len(lines) - rejected, rejected


def child_apply(args) -> dict:
    config = bench_config(0, args.outlets)
    settings = settings_for(args.windows, config)
    lines = read_file(args.file)
    warm = [raw for raw in lines if ONBOARDED in raw]
    timed = [raw for raw in lines if ONBOARDED not in raw]
    del lines
    clock = clock_for(settings.clock)
    engine = KpiEngine(settings, clock.now_us())
    rss0 = settle_rss()
    gc_timer = GcTimer()

    cpu, wall = time.process_time(), time.perf_counter()
    warm_applied, _ = apply_loop(warm, engine, settings, clock)
    warm_cpu, warm_wall = time.process_time() - cpu, time.perf_counter() - wall
    rss1 = settle_rss()
    gc_timer.take()

    cpu, wall = time.process_time(), time.perf_counter()
    applied, rejected = apply_loop(timed, engine, settings, clock)
    timed_cpu, timed_wall = time.process_time() - cpu, time.perf_counter() - wall
    timed_gc = gc_timer.take()
    rss2 = settle_rss()

    engine.advance(clock.now_us())
    count, digest = values_digest(engine)
    return {"windows": args.windows, "outlets_config": args.outlets, "warm": len(warm), "warm_cpu": warm_cpu,
            "warm_wall": warm_wall, "timed": len(timed), "applied": applied, "rejected": rejected,
            "cpu": timed_cpu, "wall": timed_wall, "gc": timed_gc, "tracked": len(engine.outlets),
            "rss0": rss0, "rss1": rss1, "rss2": rss2, "values": count, "digest": digest,
            "pending_vectors": sum(ledger.pending_count() for ledger in engine.ledgers.values())}


def child_rebuild(args) -> dict:
    from stream.worker.recovery import apply_fact_batches  # the worker's own rebuild loop

    config = bench_config(0, args.outlets)
    settings = settings_for(args.windows, config)
    lines = read_file(args.file)
    ref_us = reference_instant_us(settings.clock, None)
    # The facts table as the worker holds it after recovery: batches of up to 500 facts,
    # (partition, [[entity, event_id, ref_us, raw], ...]) (distinct identities here).
    facts = {f"b{start}": (0, [[f"k{n}", f"e{n}", ref_us, raw.decode()]
                               for n, raw in enumerate(lines[start:start + 500], start)])
             for start in range(0, len(lines), 500)}
    fact_count = len(lines)
    del lines
    clock = clock_for(settings.clock)
    engines = {0: KpiEngine(settings, clock.now_us())}
    rss0 = settle_rss()
    allocated0 = allocator_bytes()
    gc_timer = GcTimer()

    cpu, wall = time.process_time(), time.perf_counter()
    applied = apply_fact_batches(facts.values(), engines, settings, clock)
    loop_cpu, loop_wall = time.process_time() - cpu, time.perf_counter() - wall
    engine = engines[0]
    engine.advance(clock.now_us())
    count, digest = values_digest(engine)  # roll-up and evaluation: "to correct values"
    total_cpu, total_wall = time.process_time() - cpu, time.perf_counter() - wall
    total_gc = gc_timer.take()

    rss1 = settle_rss()
    allocated1 = allocator_bytes()
    allocated = {name: allocated1[name] - allocated0[name] for name in allocated1}
    breakdown = memory_breakdown(engine, args.sample)

    # What the worker saves at a stop: the engine, the fact batches it covers, no unwritten facts.
    covered = CoveredBatches()
    for number in range(len(facts)):
        covered.add((SNAPSHOT_WRITER, number))
    cpu, wall = time.process_time(), time.perf_counter()
    size = snapshot_shelf(args).save(Family.OUTLET, 0, EngineSnapshot(engine, covered, []))
    save_cpu, save_wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"facts": fact_count, "applied": applied, "loop_cpu": loop_cpu, "loop_wall": loop_wall,
            "total_cpu": total_cpu, "total_wall": total_wall, "gc": total_gc, "values": count, "digest": digest,
            "rss0": rss0, "rss1": rss1, "tracked": len(engine.outlets), "batches": len(facts),
            "save_cpu": save_cpu, "save_wall": save_wall, "snapshot_bytes": size, "allocated": allocated, **breakdown}


SNAPSHOT_WRITER = "bench-writer"


def snapshot_shelf(args) -> SnapshotShelf:
    config = bench_config(0, args.outlets)
    return SnapshotShelf(Path(args.file).with_suffix(".snapshots"),
                         engine_fingerprint(settings_for(args.windows, config), "bench/scaling.py"))


def child_restore(args) -> dict:
    """The worker's restart from a snapshot (KpiWorker._take_snapshots, then the publication's
    advance, roll-up and evaluation): take the file, check every covered batch is among the
    facts-table keys, bring the engine to final values."""
    config = bench_config(0, args.outlets)
    settings = settings_for(args.windows, config)
    table_batches = [(SNAPSHOT_WRITER, number) for number in range(args.batches)]
    shelf = snapshot_shelf(args)
    clock = clock_for(settings.clock)
    rss0 = settle_rss()
    cpu, wall = time.process_time(), time.perf_counter()
    snapshot = shelf.take(Family.OUTLET, 0)
    if snapshot is None:
        raise SystemExit("no usable snapshot")
    load_cpu, load_wall = time.process_time() - cpu, time.perf_counter() - wall
    missing = missing_batches(snapshot.covered, table_batches)
    engine = snapshot.engine
    engine.mark_all_dirty()
    engine.advance(clock.now_us())
    count, digest = values_digest(engine)
    total_cpu, total_wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"load_cpu": load_cpu, "load_wall": load_wall, "total_cpu": total_cpu, "total_wall": total_wall,
            "missing": missing, "values": count, "digest": digest, "tracked": len(engine.outlets),
            "rss_growth": settle_rss() - rss0}


# -- sizing the state (for the explanation; RSS is the figure) --------------------------------------

class Sizer:
    """Deep sys.getsizeof, each object once; small ints and shared module constants are free."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.keep: list = []  # walked objects stay alive, so no id in `seen` is reused


    def __call__(self, obj) -> int:
        total, stack = 0, [obj]
        while stack:
            item = stack.pop()
            if item is None or isinstance(item, (bool, type)) or id(item) in self.seen:
                continue
            if isinstance(item, int) and -5 <= item <= 256:
                continue
            self.seen.add(id(item))
            self.keep.append(item)
            total += sys.getsizeof(item)
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            elif isinstance(item, (list, tuple, set, frozenset)):
                stack.extend(item)
            elif hasattr(type(item), "__slots__") and not isinstance(item, (str, bytes, int, float)):
                for name in _all_slots(type(item)):
                    stack.append(getattr(item, name, None))
        return total


def _all_slots(cls) -> list[str]:
    names = []
    for klass in cls.__mro__:
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else slots)
    return [n for n in names if n not in ("__weakref__", "__dict__")]


def memory_breakdown(engine: KpiEngine, sample: int) -> dict:
    import random

    from stream.core.outlet_packing import unpack_outlet
    from stream.core.outlet_state import NO_STAMP, OutletState

    sizer = Sizer()
    # Shared constants (the default stamp tuple, enum members, layouts) are not per outlet.
    sizer(NO_STAMP)
    sizer(engine.layouts)
    book = engine.outlets
    # Attribute tuples are shared per combination (stream/core/outlets.py): walked once here, as a table
    # that grows with combinations, not charged to whichever sampled outlet reaches them first.
    combinations = book.attribute_table
    combinations_bytes = sizer((book.attribute_table, book.canonical_attributes))
    hot, cold = book.hot, book.cold
    tracked = len(book)
    rng = random.Random(5)
    # at rest (stream/core/cold_outlets.py): no object per outlet; the heap and its index, free records
    # and the stale records of hot outlets included, are shared out over every tracked outlet
    resting = [(outlet_id, packed) for outlet_id, packed in cold.items() if outlet_id not in hot]
    chosen = rng.sample(resting, min(sample, len(resting)))
    chosen_hot = rng.sample(list(hot), min(sample, len(hot)))
    fields = [name for name in _all_slots(OutletState)]
    per_field = {name: 0 for name in fields}
    base = ids = 0
    states = [OutletState(outlet_id, *unpack_outlet(packed, book.attribute_table)) for outlet_id, packed in chosen]
    for outlet_id in chosen_hot:
        ids += sys.getsizeof(outlet_id)
        value = hot[outlet_id]
        states.append(value)
        sizer.seen.add(id(value))
        base += sys.getsizeof(value)
        for name in fields:
            if name != "outlet_id":  # the id is the dict's key, counted above
                per_field[name] += sizer(getattr(value, name))
    hot_share = len(hot) / max(1, tracked)
    # the hot outlets: the dict, and per outlet its id, the object and its fields (from the hot sample)
    hot_total = (sys.getsizeof(hot) + (base + sum(per_field.values()) + ids) / max(1, len(chosen_hot)) * len(hot))
    heap_each = cold.heap_bytes() / max(1, tracked)
    outlet_state = heap_each + hot_total / max(1, tracked)
    resting_states, hot_states = states[:len(chosen)], states[len(chosen):]

    def mean(measure) -> float:
        """Over every tracked outlet: the two samples weighted by the share of outlets they stand for."""
        def over(sampled: list) -> float:
            return sum(measure(state) for state in sampled) / len(sampled) if sampled else 0.0
        return (1 - hot_share) * over(resting_states) + hot_share * over(hot_states)
    shape = {
        "orders": mean(lambda state: len(state.order_times)),
        "visits": mean(lambda state: len(state.visits or ())),
        "with_no_orders": mean(lambda state: not state.order_times),
        "with_no_visits": mean(lambda state: not state.visits),
    }

    # Buffers that grow with events or scopes rather than outlets.
    seen = engine.deduper.seen
    keys = rng.sample(list(seen.keys()), min(sample, len(seen))) if seen else []
    dedupe_entry = 0.0
    for key in keys:  # one string per (family, entity, event_id): stream/core/engine.py Deduper.key
        dedupe_entry += sys.getsizeof(key)
    dedupe_entry = dedupe_entry / max(1, len(keys))
    dedupe = sys.getsizeof(seen) + dedupe_entry * len(seen)
    pending_sizer = Sizer()
    pending_bytes = pending_sizer([(ledger.scheduled, ledger.scheduled_other, ledger._due)  # noqa: SLF001
                                   for ledger in engine.ledgers.values()])
    ledgers = pending_sizer((engine.ledgers, engine.rollups))  # the rest: cell and scope vectors
    leads_activities = Sizer()((engine.leads.leads, engine.activities.reps))
    pending = sum(ledger.pending_count() for ledger in engine.ledgers.values())
    return {"per_field": {k: v / max(1, len(chosen_hot)) for k, v in per_field.items()},
            "state_base": base / max(1, len(chosen_hot)), "hot_share": hot_share,
            "hot_bytes": hot_total / max(1, tracked), "heap_bytes": heap_each,
            "heap_free": cold.free_bytes / max(1, tracked), "resting_packed": sum(len(p) for _, p in chosen) / max(1, len(chosen)),
            "outlet_state": outlet_state, "shape": shape,
            "combinations": len(combinations), "combinations_bytes": combinations_bytes,
            "state_slots": len(fields),
            "dedupe": dedupe, "dedupe_entries": len(seen), "dedupe_entry": dedupe_entry,
            "ledgers": ledgers, "pending": pending_bytes, "pending_vectors": pending, "leads_activities": leads_activities,
            "leads": len(engine.leads.leads)}


# -- parent ---------------------------------------------------------------------------------------

def run_child(*argv: str) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"child failed: {' '.join(argv)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, help="timed events per run (default 500,000; --quick 50,000)")
    parser.add_argument("--quick", action="store_true", help="50k events, 10k vs 100k outlets: a smoke run")
    parser.add_argument("--small", type=int, default=10_000, help="outlets of the small world")
    parser.add_argument("--large", type=int, help="outlets of the large world (default 1,000,000; --quick 100,000)")
    parser.add_argument("--sample", type=int, default=20_000, help="outlets / dedupe ids sized for the breakdown")
    parser.add_argument("--pairs", type=int, help="adjacent run pairs per ratio (default 3; --quick 1)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--child", choices=("generate", "apply", "rebuild", "restore"), help=argparse.SUPPRESS)
    parser.add_argument("--batches", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--outlets", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--windows", default="7d,30d,60d", help=argparse.SUPPRESS)
    args = parser.parse_args()
    events = args.events or (50_000 if args.quick else 500_000)
    large = args.large or (100_000 if args.quick else 1_000_000)
    pairs = args.pairs or (1 if args.quick else 3)

    if args.child:
        args.events = events
        result = {"generate": child_generate, "apply": child_apply, "rebuild": child_rebuild,
                  "restore": child_restore}[args.child](args)
        print(json.dumps(result))
        return 0

    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="kpi-scaling-"))
    small_file, large_file = workdir / f"outlets-{args.small}.jsonl", workdir / f"outlets-{large}.jsonl"
    print(f"command: {Path(sys.executable).name} {command()}", flush=True)
    print(f"machine: {machine()}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    print(f"parameters: {events:,} timed events per run, outlets {args.small:,} vs {large:,}, seed 7, "
          f"pinned clock at the generator's end (2026-11-24T00:00:00Z), slot 60 s", flush=True)
    print(f"generating {events:,} events + onboarding for {args.small:,} and for {large:,} outlets "
          f"(seed 7, untimed, two processes) ...", flush=True)
    procs = [subprocess.Popen([sys.executable, __file__, "--child", "generate", "--events", str(events),
                               "--outlets", str(n), "--file", str(f)], stdout=subprocess.PIPE, text=True)
             for n, f in ((args.small, small_file), (large, large_file))]
    gens = []
    generated = time.perf_counter()
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit("generation failed")
        gens.append(json.loads(out.strip().splitlines()[-1]))
    print(f"  {args.small:,} outlets: {gens[0]['lines']:,} lines ({gens[0]['onboarding']:,} outlet.onboarded); "
          f"{large:,} outlets: {gens[1]['lines']:,} lines ({gens[1]['onboarding']:,} outlet.onboarded); "
          f"{time.perf_counter() - generated:.0f} s", flush=True)

    def apply(windows: str, outlets: int, path: Path) -> dict:
        r = run_child("--child", "apply", "--windows", windows, "--outlets", str(outlets), "--file", str(path),
                      "--events", str(events))
        r["us"] = r["cpu"] / r["timed"] * 1e6
        r["us_wall"] = r["wall"] / r["timed"] * 1e6
        print(f"  windows {windows:<10} outlets {outlets:>9,}: {r['timed']:,} events in {r['cpu']:.1f} s CPU "
              f"(GC {r['gc']:.1f} s; {r['wall']:.1f} s wall): {r['us']:.2f} us/event CPU, {r['us_wall']:.2f} wall; "
              f"onboarding {r['warm']:,} first: {r['warm_cpu'] / max(1, r['warm']) * 1e6:.2f} us/event; "
              f"tracked outlets {r['tracked']:,}; {r['values']:,} values; "
              f"{r['pending_vectors']:,} pending slot vectors; RSS +{mib(r['rss2'] - r['rss0'])}", flush=True)
        return r

    # This machine's speed drifts by up to ~1.3x within minutes (bench/README.md), more than the
    # targets' 10 and 20 %: each ratio is taken between two adjacent runs, every other pair in the
    # other order (a steady slowdown would otherwise always count against the second), and the
    # median counts.
    def adjacent(first, second, pair: int) -> tuple[dict, dict]:
        if pair % 2:
            later = second()
            return first(), later
        return first(), second()

    print(f"\n1. per-event cost vs window length (same events, 10k-outlet world; fresh process each; "
          f"{pairs} pair(s) of adjacent runs, alternating which goes first)", flush=True)
    window_pairs = [adjacent(lambda: apply("7d", args.small, small_file), lambda: apply("60d", args.small, small_file),
                             pair) for pair in range(pairs)]
    window_ratios = [w60["us"] / w7["us"] for w7, w60 in window_pairs]
    print(f"  60d/7d per pair: {', '.join(f'{ratio:.3f}' for ratio in window_ratios)}", flush=True)

    print(f"\n2. per-event cost vs outlets tracked (default windows 7d,30d,60d; {pairs} pair(s) of adjacent runs, "
          f"alternating which goes first)", flush=True)
    outlet_pairs = [adjacent(lambda: apply("7d,30d,60d", args.small, small_file),
                             lambda: apply("7d,30d,60d", large, large_file), pair) for pair in range(pairs)]
    outlet_ratios = [big["us"] / small["us"] for small, big in outlet_pairs]
    print(f"  {large:,} / {args.small:,} outlets per pair: {', '.join(f'{ratio:.3f}' for ratio in outlet_ratios)}",
          flush=True)
    big = outlet_pairs[0][1]

    print("\n3./4. rebuild of the large state from its facts, then its memory (fresh process)", flush=True)
    rb = run_child("--child", "rebuild", "--windows", "7d,30d,60d", "--outlets", str(large), "--file",
                   str(large_file), "--sample", str(args.sample), "--events", str(events))
    growth = rb["rss1"] - rb["rss0"]
    tracked = rb["tracked"]
    buffers = rb["dedupe"] + rb["pending"] + rb["ledgers"] + rb["leads_activities"]
    beyond = (growth - buffers) / tracked
    print(f"  facts {rb['facts']:,} (every accepted event), applied {rb['applied']:,}; rebuild loop "
          f"{rb['loop_cpu']:.1f} s CPU ({rb['loop_wall']:.1f} s wall), to final values {rb['total_cpu']:.1f} s CPU "
          f"(GC {rb['gc']:.1f} s; {rb['total_wall']:.1f} s wall) = {rb['total_cpu'] / rb['facts'] * 1e6:.1f} us/fact; "
          f"{rb['values']:,} values, "
          f"{'equal to' if rb['digest'] == big['digest'] else 'DIFFERENT FROM'} run 2's", flush=True)
    print(f"  RSS {mib(rb['rss0'])} with the facts loaded -> {mib(rb['rss1'])} with the state: growth "
          f"{mib(growth)} for {tracked:,} tracked outlets = {growth / tracked:,.0f} B/outlet all-in")
    print(f"  of which buffers (walked, sys.getsizeof): dedupe ids {mib(rb['dedupe'])} "
          f"({rb['dedupe_entries']:,} ids x {rb['dedupe_entry']:.0f} B + table); pending slot deltas "
          f"{mib(rb['pending'])} ({rb['pending_vectors']:,} (slot, cell) vectors, "
          f"{rb['pending'] / max(1, rb['pending_vectors']):.0f} B each); cell + scope vectors {mib(rb['ledgers'])}; "
          f"leads + activity reps "
          f"{mib(rb['leads_activities'])} ({rb['leads']:,} leads)")
    grown = rb["allocated"]
    print(f"  where the growth is (allocators' own figures): pymalloc arenas {mib(grown['pymalloc_arenas'])} "
          f"({mib(grown['pymalloc_live'])} in live blocks, the rest free room: free blocks, empty pools, headers), "
          f"glibc heap {mib(grown['malloc_heap'])} ({mib(grown['malloc_live'])} in use, {mib(grown['malloc_free'])} "
          f"free), glibc mmapped {mib(grown['malloc_mmapped'])}")
    print(f"  => beyond buffers: ({mib(growth)} - {mib(buffers)}) / {tracked:,} = {beyond:,.0f} B/outlet (RSS)")
    shape = rb["shape"]
    print(f"  per-outlet state walked on {min(args.sample, tracked):,} sampled outlets (avg {shape['orders']:.2f} "
          f"orders, {shape['visits']:.2f} visits; {shape['with_no_orders']:.0%} without orders, "
          f"{shape['with_no_visits']:.0%} without visits): {rb['outlet_state']:,.0f} B =")
    print(f"    {rb['heap_bytes']:.0f} B of the heap of outlets at rest and its index (stream/core/cold_outlets.py; "
          f"{rb['heap_free']:.0f} of them free records; a packed state averages {rb['resting_packed']:.0f} B) + "
          f"{rb['hot_bytes']:.0f} B for the {rb['hot_share']:.1%} hot as objects (dict slot, id, "
          f"{rb['state_base']:.0f} B OutletState object ({rb['state_slots']} slots) and its fields, per hot outlet:")
    print(f"    (plus the shared attribute tuples and their index: {rb['combinations']:,} combinations, {mib(rb['combinations_bytes'])} "
          f"= {rb['combinations_bytes'] / tracked:.0f} B/outlet)")
    for name, size in sorted(rb["per_field"].items(), key=lambda item: -item[1]):
        print(f"    {size:7.0f}  {name}")

    print("\n5. restart from a snapshot of that state (saved in the rebuild's process; taken in a fresh one)",
          flush=True)
    rs = run_child("--child", "restore", "--windows", "7d,30d,60d", "--outlets", str(large), "--file",
                   str(large_file), "--batches", str(rb["batches"]), "--events", str(events))
    print(f"  saved {mib(rb['snapshot_bytes'])} in {rb['save_cpu']:.1f} s CPU ({rb['save_wall']:.1f} s wall, "
          f"fsync included); taken in {rs['load_cpu']:.1f} s CPU ({rs['load_wall']:.1f} s wall); covered batches "
          f"missing from the table: {rs['missing']}; to final values {rs['total_cpu']:.1f} s CPU "
          f"({rs['total_wall']:.1f} s wall); {rs['tracked']:,} outlets, {rs['values']:,} values, "
          f"{'equal to' if rs['digest'] == big['digest'] else 'DIFFERENT FROM'} run 2's; RSS +{mib(rs['rss_growth'])}",
          flush=True)

    print("\nsummary (per-event cost = CPU time of the timed loop / events; targets from issue 7)")
    r1 = statistics.median(window_ratios)
    r2 = statistics.median(outlet_ratios)
    def listed(values) -> str:
        return ", ".join(f"{value:.3f}" if value < 10 else f"{value:.2f}" for value in values)
    print(f"  1. 7d only {listed(w7['us'] for w7, _ in window_pairs)} us/event, 60d only "
          f"{listed(w60['us'] for _, w60 in window_pairs)}: 60d/7d median {r1:.3f} (of {listed(window_ratios)})   "
          f"target <= 1.10: {verdict(r1 <= 1.10)}")
    print(f"  2. {args.small:,} outlets {listed(small['us'] for small, _ in outlet_pairs)} us/event, "
          f"{big['tracked']:,} outlets {listed(big_['us'] for _, big_ in outlet_pairs)}: median ratio {r2:.3f} "
          f"(of {listed(outlet_ratios)})   target <= 1.20: {verdict(r2 <= 1.20)}")
    print(f"  3. memory beyond buffers {beyond:,.0f} B/outlet ({growth / tracked:,.0f} all-in)   "
          f"target <= 200: {verdict(beyond <= 200)}")
    print(f"  4. rebuild of {tracked:,} outlets from {rb['facts']:,} facts to final values: "
          f"{rb['total_cpu']:.1f} s CPU ({rb['total_wall']:.1f} s wall)   target <= 10 s: "
          f"{verdict(rb['total_cpu'] <= 10)}  (CPU part only; reading the changelog from Kafka is extra)")
    print(f"  5. restart of {rs['tracked']:,} outlets from a snapshot to final values: {rs['total_cpu']:.1f} s CPU "
          f"({rs['total_wall']:.1f} s wall), {rs['total_cpu'] / rb['total_cpu']:.3f} of the rebuild   target <= 10 s: "
          f"{verdict(rs['total_cpu'] <= 10 and rs['digest'] == big['digest'])}  (after a stop that saved it; a "
          f"rebalance or a start after a kill is item 4)")
    print(f"  total run time {time.perf_counter() - started:.0f} s")
    if not args.keep:
        for f in (small_file, large_file):
            f.unlink(missing_ok=True)
        shutil.rmtree(large_file.with_suffix(".snapshots"), ignore_errors=True)
        workdir.rmdir()
    else:
        print(f"  files kept in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
