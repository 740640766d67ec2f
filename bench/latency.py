"""Event produced -> KPI update published: latency percentiles under a steady load (issue 7).

    .venv/bin/python bench/latency.py --rate 1000 --seconds 60 --interval 1.0
    .venv/bin/python bench/latency.py --rate 1000 --seconds 60 --interval 0.1

Starts a local broker, Redis and one worker (KPI_PUBLISH_INTERVAL = --interval, clock pinned to
the generator's "now", 4 partitions), waits until it is ready, then produces rate x seconds
generated events (seed 7, 3 % late, no duplicates or junk) at a steady rate, each with its Kafka
timestamp set to its send time (the instant the producer is handed the message; linger and the
broker round trip count as latency). Latency is measured two ways:

1. Inside: the worker's histogram `kpi_stream_publish_latency_seconds` from /metrics after the run.
   One observation per applied event (stream/stages/waiting.py): the send of the publication round that
   took its flush's partials (a round sends every 1,000 updates, the exported scope types first)
   minus its Kafka timestamp, counted per 10 ms. It counts every event, also those that moved no
   published value, so its n is the events produced, where the outside figure measures ~93 %.
   Percentiles are interpolated inside the histogram's buckets (as PromQL's histogram_quantile
   does), so they are only as fine as the buckets (..., 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5,
   10, 30, 60 s).

2. Outside: an aiokafka consumer of `{prefix}kpi.updates` that knows what it produced. Four KPIs
   move by exactly one for each event of one kind (with the pinned clock, no duplicates or junk):
   orders|60d|global|all (+1 per order inside the 60 d window), visits|60d|global|all,
   activities|60d|global|all|all and new_leads|60d|global|all. For each of these keys, the i-th
   contributing event in produce order is taken as reflected by the first update of that key
   whose value is >= i; its latency is that update's Kafka timestamp (set by the worker's producer
   when it publishes) minus the event's send time. Two figures:
     per event  - every contributing event's latency;
     per update - for each update message, the latency of the oldest event it newly reflects
                  (the worker histogram's definition, per key instead of per round).
   Caveat: the four keys are sums over 4 partitions consumed concurrently, so "value >= i" can be
   reached while event i itself still waits (a later event of another partition was applied
   first), or not yet reached although event i was applied (an earlier one of another partition
   waits): an event's latency can be attributed a little early or late. When the worker keeps
   up (lag of a few messages) that is milliseconds; under a backlog it can be more. Events
   outside the 60 d window and outlet/lead-update/close events change none of the four keys and
   are not measured (the "measured" count is printed).

--half-max measures the target's rate in the same run: first the worker's catch-up rate on
--max-events events of the same traffic (generated the same way, loaded untimed into topics of
their own, timed from the first event consumed to the last as bench/throughput.py times c, at the
same publish interval), then the steady load at half of it.

--days sets the span of the generated event times. The default (the generator's 90 days of
history) replays history: the first minute's events are older than every window and move few
keys, the last third's fall inside the 7 d window too, so the update rate (and the worker's CPU)
keeps growing through a run (the per-30 s table shows it). --days 7 is live traffic: every event
inside every window from the first second, the steady state throughout.

--outlets defaults to the generator's 2,000 (not throughput.py's 20,000): the generated stream
starts with one onboarding per outlet, and at 1000 ev/s 20,000 of them would be the first 20 s.

Targets (issue 7): p99 <= 1.5 s at a 1 s publish interval, p99 <= 300 ms at 0.1 s.
The machine has 2 cores shared by the broker, the worker, this producer and consumer (and
possibly other test suites): the load generator competes with the worker for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from harness import (  # first: it puts the repository on sys.path
    as_of_text, bench_config, bench_worker_env, broker_and_redis, command, cpu_seconds, input_messages, is_ready,
    load_topics, machine, minor_faults, print_py_spy_summary, print_stage_costs, rss_bytes, scrape, start_py_spy,
    stolen_cpu_seconds, worker_throughput,
)
from stream.core.timeparse import parse_rfc3339_us
from tests.e2e.harness import WorkerProcess, counter_total, unique_names

SLOT_US = 60_000_000
WINDOW_SLOTS = 60 * 1440  # 60 d of 60 s slots
TRACKED = {  # event type -> the global 60d key it moves by one
    "order.placed": "orders|60d|global|all",
    "visit.completed": "visits|60d|global|all",
    "activity.logged": "activities|60d|global|all|all",
    "lead.created": "new_leads|60d|global|all",
}
TARGETS = {1.0: 1.5, 0.1: 0.3}


def tracked_key(value: bytes, as_of_us: int) -> str | None:
    """The key an event moves by exactly one, or None."""
    doc = orjson.loads(value)
    key = TRACKED.get(doc.get("type"))
    if key is None:
        return None
    s = as_of_us // SLOT_US
    slot = parse_rfc3339_us(doc["occurred_at"]) // SLOT_US
    return key if s - WINDOW_SLOTS < slot <= s else None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> tuple[float, float, float]:
    """(estimate, bucket lower bound, bucket upper bound) from cumulative (le, count) buckets."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return math.nan, math.nan, math.nan
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower_bound, lower_bound, le
            width = count - lower_count
            fraction = (rank - lower_count) / width if width else 1.0
            return lower_bound + (le - lower_bound) * fraction, lower_bound, le
        lower_bound, lower_count = le, count
    return math.nan, math.nan, math.nan


@dataclass(frozen=True, slots=True)
class Span:
    """What the worker did over one poll of the load phase (about 5 s)."""

    seconds: float
    consumed: float
    published: float
    cpu_seconds: float
    stolen_seconds: float
    lag: float
    main_thread_seconds: float  # the worker's event loop: agents, timers, publication
    broker_seconds: float
    generator_seconds: float  # this process: the producer and the outside consumer
    minor_faults: float  # the worker's: a background snapshot's fork shows as copy-on-write faults
    saves: float  # background snapshots finished (kpi_stream_background_snapshots_total)
    rss_mb: float  # the worker's, at the end of the span


def print_spans(spans: list[Span], per: int = 6) -> None:
    """The load phase in steps of six polls (~30 s; seconds counted from the first poll): whether
    it was a steady state."""
    print("by 30 s of load: events consumed/s, KPI updates published/s, CPU in cores (the worker, its main thread; "
          "the broker; this load generator; the hypervisor's steal), max lag; the worker's minor page faults/s "
          "and RSS at the end (+save: a background snapshot finished)")
    began = 0.0
    for start in range(0, len(spans), per):
        part = spans[start:start + per]
        seconds = sum(s.seconds for s in part)

        def cores(field: str) -> float:
            return sum(getattr(s, field) for s in part) / seconds

        print(f"  {began:4.0f}-{began + seconds:<4.0f}s  {sum(s.consumed for s in part) / seconds:7.0f} ev/s "
              f"{sum(s.published for s in part) / seconds:7.0f} upd/s  worker {cores('cpu_seconds'):4.2f}"
              f" main {cores('main_thread_seconds'):4.2f}  broker {cores('broker_seconds'):4.2f}"
              f"  generator {cores('generator_seconds'):4.2f}  steal {cores('stolen_seconds'):4.2f}"
              f"  lag {max(s.lag for s in part):7.0f}  faults {sum(s.minor_faults for s in part) / seconds:6.0f}/s"
              f"  rss {part[-1].rss_mb:5.0f} MB{'  +save' if sum(s.saves for s in part) else ''}")
        began += seconds


def maximum_rate(broker, redis, workdir: Path, args) -> float:
    """The worker's catch-up rate on --max-events events of the load's traffic, in topics of its own."""
    config = bench_config(args.max_events, args.outlets, args.days, args.reps)
    messages = input_messages(config)
    prefix, app_id = unique_names()
    load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
    (workdir / "maximum").mkdir()
    rate, _with_startup = worker_throughput(broker.bootstrap, redis.url, prefix, app_id, len(messages),
                                            as_of_text(config), workdir / "maximum", 1,
                                            publish_interval=args.interval)
    return rate


def worker_histogram(metrics_text: str, name: str = "kpi_stream_publish_latency_seconds",
                     labels: dict[str, str] | None = None) -> tuple[list[tuple[float, float]], float, float]:
    from prometheus_client.parser import text_string_to_metric_families

    buckets, total, count = [], 0.0, 0.0
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            if sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_count"):
                count = sample.value
    return buckets, total, count


async def produce_steadily(bootstrap: str, prefix: str, messages, rate: float) -> list[int]:
    """Send at `rate` per second; returns each message's send time (its Kafka timestamp, ms)."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=262_144)
    await producer.start()
    sent_ms: list[int] = []
    pending = []
    started = time.monotonic()
    try:
        for n, message in enumerate(messages):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ts = int(time.time() * 1000)
            sent_ms.append(ts)
            pending.append(await producer.send(prefix + message.topic, key=message.key, value=message.value,
                                               timestamp_ms=ts))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return sent_ms


async def run_load(bootstrap: str, prefix: str, messages, rate: float, expected_final: dict[str, int],
                   drain_s: float) -> tuple[list[int], dict[str, list[tuple[int, int, float]]], float]:
    """Produce while reading kpi.updates; returns send times, updates per tracked key
    (value, Kafka timestamp ms, receive time) and the produce duration."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(prefix + "kpi.updates", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    updates: dict[str, list[tuple[int, int, float]]] = {key: [] for key in TRACKED.values()}
    done = asyncio.Event()

    async def read() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.time()
            for records in batch.values():
                for record in records:
                    key = record.key.decode()
                    if key in updates:
                        updates[key].append((orjson.loads(record.value)["value"], record.timestamp, now))
            if done.is_set() and all(updates[k] and updates[k][-1][0] >= v for k, v in expected_final.items()):
                return

    reader = asyncio.create_task(read())
    try:
        started = time.monotonic()
        sent_ms = await produce_steadily(bootstrap, prefix, messages, rate)
        produce_s = time.monotonic() - started
        done.set()
        try:
            await asyncio.wait_for(reader, timeout=drain_s)
        except asyncio.TimeoutError:
            print(f"warning: not every event reflected {drain_s:.0f} s after the last send", flush=True)
    finally:
        reader.cancel()
        await consumer.stop()
    return sent_ms, updates, produce_s


def outside_latencies(sent_ms: list[int], contributing: dict[str, list[int]],
                      updates: dict[str, list[tuple[int, int, float]]]) -> tuple[list[float], list[float], int]:
    per_event, per_update, unreflected = [], [], 0
    for key, indices in contributing.items():
        seen = 0  # events of this key already reflected
        for value, ts_ms, _received in updates[key]:
            value = min(int(value), len(indices))
            if value <= seen:
                continue
            per_update.append((ts_ms - sent_ms[indices[seen]]) / 1000)
            for i in range(seen, value):
                per_event.append((ts_ms - sent_ms[indices[i]]) / 1000)
            seen = value
        unreflected += len(indices) - seen
    return per_event, per_update, unreflected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=1.0, help="KPI_PUBLISH_INTERVAL of the worker")
    parser.add_argument("--outlets", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=None,
                        help="span of the generated event times (default: the generator's 90 days; 7: live traffic)")
    parser.add_argument("--reps", type=int, default=None,
                        help="the field force (default: the generator's 60); every rep is a scope, so the KPI "
                             "updates a second grow with it (docs/performance.md, \"Publication\")")
    parser.add_argument("--half-max", action="store_true",
                        help="first measure the worker's maximum (catch-up) rate on this traffic, then load at half")
    parser.add_argument("--max-events", type=int, default=300_000,
                        help="events the maximum rate is measured on (with --half-max)")
    parser.add_argument("--generator-nice", type=int, default=10, metavar="N",
                        help="nice value of the load generator (this process's producer and outside consumer): "
                             "it yields the CPU to the worker and the broker, which would have machines of their "
                             "own (default 10; 0: compete equally). Latency is unaffected: an event's send time "
                             "is taken when it is handed to the producer, and the update's time is the worker's")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (broker data, logs)")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for the last updates")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="sample the worker with py-spy during the load (collapsed stacks to FILE) and "
                             "print where its time goes (needs `pip install py-spy`); FILE.json: speedscope format, "
                             "samples in time order")
    parser.add_argument("--py-spy-from", type=float, default=0.0, metavar="SECONDS",
                        help="start sampling this many seconds into the load (the steady state comes late: "
                             "the generated history reaches the shorter windows in the last third)")
    args = parser.parse_args()
    with broker_and_redis("kpi-latency-", keep=args.keep) as (workdir, broker, redis):
        return load_and_measure(args, workdir, broker, redis)


def load_and_measure(args, workdir: Path, broker, redis) -> int:
    worker = None
    try:
        max_rate = None
        if args.half_max:
            max_rate = maximum_rate(broker, redis, workdir, args)
            args.rate = max_rate / 2
            print(f"maximum rate: {max_rate:.0f} ev/s (catch-up of {args.max_events} events, publish interval "
                  f"{args.interval} s); loading at half: {args.rate:.0f} ev/s", flush=True)
        config = bench_config(int(args.rate * args.seconds), args.outlets, args.days, args.reps)
        messages = input_messages(config)
        as_of = as_of_text(config)
        as_of_us = parse_rfc3339_us(as_of)
        contributing: dict[str, list[int]] = {key: [] for key in TRACKED.values()}
        for i, m in enumerate(messages):
            key = tracked_key(m.value, as_of_us)
            if key is not None:
                contributing[key].append(i)
        expected_final = {key: len(indices) for key, indices in contributing.items()}

        prefix, app_id = unique_names()
        env = bench_worker_env(broker.bootstrap, redis.url, prefix, app_id, workdir / "state", as_of,
                               KPI_PUBLISH_INTERVAL=str(args.interval))
        worker = WorkerProcess(env, workdir / "worker.log").start()
        deadline = time.monotonic() + 120
        while not is_ready(worker):
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready:\n{worker.log_tail()}")
            time.sleep(0.5)

        lag_seen: list[float] = []  # the worker's kpi_stream_consumer_lag total, every 5 s
        steal_seen: list[float] = []  # cores' worth of CPU the hypervisor took, per 5 s span
        spans: list[Span] = []  # every 5 s: what the worker did in it
        stop_polling = threading.Event()

        def poll_lag() -> None:
            stolen, at = stolen_cpu_seconds(), time.monotonic()
            last_span = None  # the `mark` of the last good poll
            while not stop_polling.wait(5.0):
                text = scrape(worker)
                now_stolen, now = stolen_cpu_seconds(), time.monotonic()
                if text is not None:
                    lag_seen.append(counter_total(text, "kpi_stream_consumer_lag"))
                    pid = worker.process.pid
                    mark = (now, now_stolen, cpu_seconds(pid),
                            counter_total(text, "kpi_stream_events_consumed_total"),
                            counter_total(text, "kpi_stream_kpi_updates_published_total"),
                            cpu_seconds(pid, thread=pid), cpu_seconds(broker.pid), cpu_seconds(os.getpid()),
                            minor_faults(pid), counter_total(text, "kpi_stream_background_snapshots_total"))
                    if last_span is not None:
                        seconds, stolen_s, cpu_s, consumed, published, main_s, broker_s, generator_s, faults, saves = (
                            a - b for a, b in zip(mark, last_span))
                        spans.append(Span(seconds, consumed, published, cpu_s, stolen_s, lag_seen[-1], main_s,
                                          broker_s, generator_s, faults, saves, rss_bytes(pid) / 2**20))
                    last_span = mark
                steal_seen.append((now_stolen - stolen) / (now - at))
                stolen, at = now_stolen, now

        poller = threading.Thread(target=poll_lag, daemon=True)
        poller.start()
        load_before, cpu_before, wall_before = os.getloadavg()[0], cpu_seconds(worker.process.pid), time.monotonic()
        stolen_before = stolen_cpu_seconds()
        sampler = (start_py_spy(worker.process.pid, args.py_spy, args.seconds, args.py_spy_from)
                   if args.py_spy else None)
        # Linux: the calling thread only, which runs the producer and the outside consumer
        os.setpriority(os.PRIO_PROCESS, 0, args.generator_nice)
        sent_ms, updates, produce_s = asyncio.run(
            run_load(broker.bootstrap, prefix, messages, args.rate, expected_final, args.drain))
        load_after, cpu_used = os.getloadavg()[0], cpu_seconds(worker.process.pid) - cpu_before
        wall_used = time.monotonic() - wall_before
        stolen = stolen_cpu_seconds() - stolen_before
        stop_polling.set()
        poller.join()
        if sampler is not None:
            sampler.wait(timeout=60)
        final_metrics = scrape(worker)
        if final_metrics is None:
            raise RuntimeError("/metrics did not answer after the load")
        buckets, h_sum, h_count = worker_histogram(final_metrics)
        published = counter_total(final_metrics, "kpi_stream_kpi_updates_published_total")
        last_reflected_ms = max((u[-1][1] for u in updates.values() if u), default=0)
        per_event, per_update, unreflected = outside_latencies(sent_ms, contributing, updates)
        finals = {key: (updates[key][-1][0] if updates[key] else None) for key in TRACKED.values()}
        target = TARGETS.get(args.interval)

        print(f"command: {command()}")
        print(f"machine: {machine()}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after")
        print(f"worker CPU: {cpu_used:.1f} s in {wall_used:.1f} s of load and drain "
              f"({100 * cpu_used / wall_used:.0f} % of one core)")
        print(f"CPU taken by the hypervisor (/proc/stat steal): {stolen:.1f} s, {stolen / wall_used:.2f} of a core on "
              f"average, up to {max(steal_seen, default=0.0):.2f} over a 5 s span -- lag bursts follow it")
        print(f"events: {len(messages)} produced in {produce_s:.1f} s ({len(messages) / produce_s:.0f} ev/s, asked "
              f"{args.rate:.0f}; load generator at nice {args.generator_nice}); {config.days} days of event time, "
              f"{args.outlets} outlets, {config.reps} reps; publish interval {args.interval} s; clock pinned at {as_of}")
        print_spans(spans)
        print("final values of the tracked keys (expected): "
              + ", ".join(f"{k.split('|')[0]} {finals[k]} ({expected_final[k]})" for k in TRACKED.values()))
        rounds = worker_histogram(final_metrics, "kpi_stream_stage_delay_seconds", {"stage": "publication"})[2]
        print(f"worker: {published:.0f} KPI updates published in {rounds:.0f} sends with updates "
              f"({published / max(rounds, 1):.0f} per send); consumer lag sampled every 5 s: max "
              f"{max(lag_seen, default=math.nan):.0f} messages; last tracked update "
              f"{(last_reflected_ms - sent_ms[-1]) / 1000:.1f} s after the last send")
        line = "  p50 {:7.3f} s   p95 {:7.3f} s   p99 {:7.3f} s   max {:7.3f} s   n={}"
        print("1. worker histogram kpi_stream_publish_latency_seconds (per applied event):")
        if h_count:
            q = {p: histogram_quantile(buckets, p) for p in (0.5, 0.95, 0.99)}
            print("  " + "   ".join(f"p{round(p * 100)} {q[p][0]:7.3f} s (bucket {q[p][1]:g}-{q[p][2]:g} s)"
                                    for p in (0.5, 0.95, 0.99))
                  + f"   mean {h_sum / h_count:.3f} s   n={h_count:.0f}")
        else:
            q = {}
            print("  no observations")
        print("   its parts, kpi_stream_stage_delay_seconds (input per event, partials per message, "
              "publication per round):")
        gc_buckets, gc_sum, gc_count = worker_histogram(final_metrics, "kpi_stream_gc_pause_seconds",
                                                         {"generation": "2"})
        slowest = next((le for le, count in gc_buckets if count >= gc_count), math.nan) if gc_count else 0.0
        print(f"   full garbage collections (generation 2): {gc_count:.0f}, {gc_sum:.3f} s in all, "
              f"the slowest <= {slowest:g} s (kpi_stream_gc_pause_seconds)")
        younger = (worker_histogram(final_metrics, "kpi_stream_gc_pause_seconds", {"generation": str(generation)})
                   for generation in (0, 1))
        print("   younger collections: " + ", ".join(
            f"generation {generation} {count:.0f} ({seconds:.3f} s)"
            for generation, (_, seconds, count) in enumerate(younger)))
        print(f"   input agents held back by the facts backlog: "
              f"{counter_total(final_metrics, 'kpi_stream_backpressure_seconds_total'):.1f} s (kpi_stream_backpressure_seconds)")
        for stage in ("input", "partials", "publication"):
            s_buckets, s_sum, s_count = worker_histogram(final_metrics, "kpi_stream_stage_delay_seconds",
                                                         {"stage": stage})
            if s_count:
                print(f"  {stage:12}" + "   ".join(
                    f"p{round(p * 100)} {histogram_quantile(s_buckets, p)[0]:7.3f} s" for p in (0.5, 0.95, 0.99))
                      + f"   mean {s_sum / s_count:.3f} s   n={s_count:.0f}")
        print(f"2. outside consumer of kpi.updates ({sum(expected_final.values())} of {len(messages)} events "
              f"measured, {unreflected} never reflected):")
        print("  per event: " + line.format(percentile(per_event, 0.5), percentile(per_event, 0.95),
                                            percentile(per_event, 0.99), max(per_event, default=math.nan),
                                            len(per_event)))
        print("  per update:" + line.format(percentile(per_update, 0.5), percentile(per_update, 0.95),
                                            percentile(per_update, 0.99), max(per_update, default=math.nan),
                                            len(per_update)))
        if target is not None:
            inside_p99 = q[0.99][0] if q else math.nan
            outside_p99 = percentile(per_event, 0.99)
            verdict = lambda x: "met" if x <= target else "NOT met"  # noqa: E731
            where = (f"half the maximum rate ({max_rate:.0f} ev/s) measured in this run" if max_rate
                     else f"{args.rate:.0f} ev/s")
            print(f"at {where}:")
            print(f"target p99 <= {target} s at interval {args.interval} s: worker histogram {inside_p99:.3f} s "
                  f"({verdict(inside_p99)}), outside per event {outside_p99:.3f} s ({verdict(outside_p99)}), "
                  f"outside per update {percentile(per_update, 0.99):.3f} s ({verdict(percentile(per_update, 0.99))})")
        if args.py_spy:
            print_py_spy_summary(args.py_spy)
            sampled = args.seconds - args.py_spy_from
            print_stage_costs(args.py_spy, round(len(messages) * sampled / args.seconds),
                              f", the load's last {sampled:.0f} s at {args.rate:.0f} ev/s")
        return 0
    finally:
        if worker is not None:
            worker.stop()


if __name__ == "__main__":
    raise SystemExit(main())
