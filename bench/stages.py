"""Where a worker's time goes, per event: py-spy's collapsed stacks cut into pipeline stages.

A py-spy summary by function says what is hot; this says what each *stage* of the worker costs
per input event, which is what compares a catch-up run (bench/throughput.py) with a steady one
(bench/latency.py) on the same traffic. Work done once per publish interval -- partials, the scope
stage, publication -- is spread over few events at a steady rate and over many while catching up,
and so is the per-fetch cost of faust's consumer.

Samples are py-spy's `record --idle --format raw` lines at `rate_hz`: every sample of every
thread, idle or not (idle ones are told apart by their stacks), so a stage's microseconds per
event are wall time the thread spent there (CPU time, unless the thread waited for the GIL or the
hypervisor). Each main-thread sample counts for the first stage whose marker is on its stack, in
the order below.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterator

PY_SPY_HZ = 200  # the benchmarks' py-spy sampling rate

# (stage, a frame that marks it): the first match wins, so nested stages come first
STAGES: tuple[tuple[str, str], ...] = (
    ("decode + engine (per event)", "KpiWorker._handle_input"),
    ("take_events batches", "Stream.take_events"),
    ("agent loop", "KpiWorker._consume_in_batches"),
    ("publication rounds", "KpiWorker._publish_round"),
    ("partials flush (stage 1)", "KpiWorker._flush_partials"),
    ("scope stage (stage 2)", "KpiWorker._scope_agent"),
    ("facts flush", "KpiWorker._flush_facts"),
    ("Redis writes", "RedisService._write_redis"),
    ("faust: fetched records to streams", "Consumer._drain_messages"),
    ("faust: stream iteration", "Stream._passive_drainer"),
    ("producer (Kafka sends)", "aiokafka/producer/"),
    ("/metrics scrapes", "metrics_page"),
)
MAIN_THREAD = "_run_module_as_main"
# A main-thread stack this short is the event loop waiting for work (uvloop's poll is in C).
IDLE_DEPTH = 7
# A thread of faust's (the consumer's) waiting in its own event loop.
THREAD_IDLE_FRAME = "ServiceThread._start_thread"


def read_samples(path: Path) -> Iterator[tuple[list[str], int]]:
    """(frames, outermost first; count) for each line of a raw py-spy file."""
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        yield stack.split(";"), int(count_text)


def print_py_spy_summary(path: Path, top: int = 25) -> None:
    """Share of samples per function: own (top of stack) and inclusive (anywhere on the stack)."""
    if path.suffix == ".json":
        print(f"py-spy: speedscope profile in {path} (open it at https://www.speedscope.app)")
        return
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for frames, count in read_samples(path):
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    print(f"py-spy: {total} samples of the worker's threads ({path})")
    for title, table in (("own", own), ("inclusive", inclusive)):
        print(f"  top {top} by {title} share:")
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            print(f"    {100 * count / total:5.1f} %  {frame}")


def stage_samples(path: Path) -> tuple[Counter, int, int, int]:
    """(samples per stage on the main thread, main-thread busy samples, main-thread idle samples,
    busy samples of all other threads) from a raw py-spy file."""
    stages: Counter = Counter()
    busy = idle = others = 0
    for frames, count in read_samples(path):
        if not frames[0].startswith(MAIN_THREAD):
            # py-spy sometimes cuts a stack short: such fragments count here too
            if not frames[-1].startswith(THREAD_IDLE_FRAME):
                others += count
            continue
        if len(frames) <= IDLE_DEPTH:
            idle += count
            continue
        busy += count
        for stage, marker in STAGES:
            if any(marker in frame for frame in frames):
                stages[stage] += count
                break
        else:
            stages["other main-thread work"] += count
    return stages, busy, idle, others


def print_stage_costs(path: Path, events: int, rate_hz: int, title: str = "") -> None:
    """Microseconds per event of each stage, of the main thread busy and idle, and of the other
    threads (faust's consumer thread: fetch requests and responses)."""
    if path.suffix == ".json" or events <= 0:
        return
    stages, busy, idle, others = stage_samples(path)
    per_event = 1e6 / rate_hz / events
    print(f"where the worker's time went, us per event ({events} events; py-spy at {rate_hz} Hz{title}):")
    for stage, samples in stages.most_common():
        print(f"  {samples * per_event:7.1f}  {stage}")
    print(f"  {busy * per_event:7.1f}  = main thread busy (the event loop: agents, timers, sends)")
    print(f"  {idle * per_event:7.1f}    main thread idle (waiting for work)")
    print(f"  {others * per_event:7.1f}    other threads busy (faust's consumer thread: fetch requests and responses)")
