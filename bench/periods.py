"""Calendar periods (spec 8, issue 35): what they cost per event, and the publication burst at a
month boundary. Goal: per event with the default periods <= 1.3x without (KPI_PERIODS=).

    .venv/bin/python bench/periods.py                      # all three parts (~15 min on 2 cores)
    .venv/bin/python bench/periods.py --parts pipeline,callgrind --events 60000
    .venv/bin/python bench/periods.py --parts boundary --boundary-outlets 20000

Other KPI settings come from the environment, as for the worker; the two variants are
KPI_PERIODS=day,week,month,quarter (the default; --periods) and KPI_PERIODS= (none).

1. pipeline: the worker's per-event work without Kafka, in fresh processes, the two variants
   alternated (--pairs): events spread over --partitions engines by their key's Kafka partition
   as the worker spreads them; stage 1 per event (decode_event + engine.apply, dedupe included)
   and, every --flush-every events (the events of one publish interval at a steady rate), stage
   1's flush (engine.advance + take_dirty + period_groups, entries encoded as
   EntityStage.flush_partials encodes them) and stage 2's round (ScopeStage.receive's keep and
   table encoding, then publish_round's evaluation and Publisher.publish of every changed scope).
   The first --warm share of the events builds state, untimed. CPU time per timed event.
2. callgrind: the same loop under `valgrind --tool=callgrind`, instructions per event (a run of
   N2 timed events minus one of N1, so start-up and warm-up cancel): this VM's timing drift does
   not touch instruction counts.
3. worker: a real worker (bench/harness.py worker_throughput) on the same pre-loaded topics,
   KPI_PERIODS= and the default alternated, each from a fresh consumer group: events/s and CPU per
   event (catching up: stage 2's work per event is smaller than at a steady rate).
4. boundary: state for --boundary-outlets outlets (--boundary-days of history ending 90 s before
   local midnight of --boundary, a 1st of a month in KPI_TIMEZONE), published once; then an
   ordinary slot crossing with no event (the reference) and the crossing of local midnight:
   stage 2's round that follows the boundary (aliases move, new designators, old periods
   forgotten), stage 1's resend (every period scope dirty) and stage 2's round for it. Updates
   published by kind of window, scopes evaluated, CPU time of each step.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from harness import INPUTS, REPO, bench_config, command, machine, stolen_cpu_seconds  # first: puts the repository on sys.path
from stream.core.calendar import ALIAS_WINDOWS, Calendar, is_designator
from stream.core.clock import reference_instant_us
from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.gcpause import collect_young_less_often, freeze_long_lived
from stream.core.engine import Family, KpiEngine, Layouts, evaluate_family
from stream.core.timeparse import format_rfc3339_us
from stream.devtools import generator
from stream.kafka.wire_partials import (decode_groups, decode_partials, encode_groups, encode_partials,
                                        encode_scope_entry, scope_key_bytes)
from stream.kafka.wire_vectors import decode_vector, encode_vector
from stream.stages.outgoing import kafka_partition, key_partition
from stream.stages.publication import Publisher, RoundOutput
from stream.stages.scope_board import ScopeBoard, ScopePartials
from stream.stages.scope_periods import ScopePeriods
from stream.stages.updates import round_stamp

DEFAULT_PERIODS = "day,week,month,quarter"
INTERVAL = 1.0  # the service's publish interval: flush numbers count seconds


class NoGauges:
    """Prometheus gauges left out (the worker sets them for KPI_EXPORT_SCOPES' scopes only)."""

    export_scopes: tuple[str, ...] = ()

    def set(self, value) -> None:
        pass

    def remove(self, value) -> None:
        pass


class Pipeline:
    """The worker's two stages without Kafka: `partitions` engines (stage 1, one per input
    partition) and one scope stage (ScopeBoard, ScopePeriods, Publisher), each step the pure code
    EntityStage.handle / flush_partials and ScopeStage.receive / publish_round call, in their
    order. Cadence (which round a scope is due in) is left out: every changed scope is published
    in the next round."""

    def __init__(self, settings: KpiSettings, now_us: int, partitions: int) -> None:
        self.settings = settings
        self.partitions = partitions
        self.engines = [KpiEngine(settings, now_us) for _ in range(partitions)]
        self.layouts = Layouts.build(settings)
        self.board = ScopeBoard()
        self.periods = ScopePeriods(settings, self.layouts, now_us)
        self.publisher = Publisher(NoGauges())
        self.table: dict[bytes, bytes] = {}
        self.flush_number = 0
        self.ref_us = reference_instant_us(settings.clock, None)

    # stage 1 ------------------------------------------------------------------------------------

    def apply(self, lines: list[tuple[int, bytes]]) -> int:
        """EntityStage.handle's pure part for each line: decode, then dedupe + apply."""
        engines, ref_us, settings = self.engines, self.ref_us, self.settings
        rejected = 0
        for partition, raw in lines:
            try:
                event = decode_event(raw, ref_us, settings)
            except Rejected:
                rejected += 1
                continue
            engines[partition].apply(event)
        return rejected

    def flush(self, now_us: int) -> list[bytes]:
        """EntityStage.flush_partials: every engine's changed scopes, with their period sums, as
        partials messages per scope-stage partition."""
        self.flush_number += 1
        by_destination: dict[int, list[list]] = {}
        for partition, engine in enumerate(self.engines):
            engine.advance(now_us)
            dirty = engine.take_dirty()
            for fam, scope, vector in dirty:
                destination = key_partition(scope_key_bytes((fam.value, scope[0], scope[1])), self.partitions)
                entry = [fam.value, scope[0], scope[1], partition, 1, self.flush_number, encode_vector(vector)]
                groups = engine.period_groups(fam, scope)
                if groups:
                    entry.append(encode_groups(groups, encode_vector))
                by_destination.setdefault(destination, []).append(entry)
        return [encode_partials(0, self.flush_number, entries, None) for entries in by_destination.values()]

    # stage 2 ------------------------------------------------------------------------------------

    def receive(self, messages: list[bytes]) -> int:
        """ScopeStage.receive: keep each partial (newest per source), carry periods the source no
        longer sends but this stage still publishes, encode the table's entry. Scopes received."""
        board, periods, count = self.board, self.periods, 0
        for value in messages:
            message = decode_partials(value)
            for entry in message.entries:
                family, scope_type, scope_id, source, generation, sequence, vector = entry[:7]
                groups = entry[7] if len(entry) > 7 else []
                key = (family, scope_type, scope_id)
                key_bytes = scope_key_bytes(key)
                partials = board.get(key)
                if partials is None:
                    partials = ScopePartials(0)
                    board.place(key, partials)
                version = (generation, sequence)
                if not partials.is_newer(source, version):
                    continue
                received = decode_groups(groups, decode_vector)
                carried = periods.carried_over(partials.groups.get(source, ()), received)
                if carried:
                    received += carried
                    groups = groups + encode_groups(carried, encode_vector)
                partials.keep(source, version, decode_vector(vector), vector, received, groups)
                self.table[key_bytes] = encode_scope_entry(0, partials.encoded, partials.versions,
                                                           partials.encoded_groups)
                board.receive(key, 0.0, message.flush, [])
                count += 1
        return count

    def follow(self, as_of_us: int) -> bool:
        """publish_round's start: the period clock follows as_of; at a boundary every scope that
        published periods is due again and left periods are forgotten."""
        if self.periods.follow(as_of_us):
            self.board.mark_dirty(self.periods.scopes)
            self.publisher.forget_windows(self.periods.is_published_window)
            return True
        return False

    def publish(self, as_of_us: int, timed: dict | None = None) -> tuple[RoundOutput, int]:
        """publish_round after `follow`: evaluate every due scope, publish the values that moved.
        `timed` gets the CPU seconds of evaluation and of publishing. (output, scopes evaluated)"""
        board, periods, publisher = self.board, self.periods, self.publisher
        out = RoundOutput(round_stamp(as_of_us, as_of_us, "/kpi-stream/bench"), self.partitions)
        evaluating = publishing = 0.0
        due = list(board.dirty)
        clock = time.process_time
        for key in due:
            t0 = clock()
            taken = board.take(key, self.flush_number, float(self.flush_number), INTERVAL)
            if taken.partials is None or not taken.partials.by_source:
                continue
            total = taken.partials.total()
            values = evaluate_family(self.settings, self.layouts, Family(key[0]), (key[1], key[2]), total, as_of_us,
                                     taken.evaluated)
            board.evaluated(key, total)
            values.extend(periods.values(key, taken.partials, total))
            t1 = clock()
            publisher.publish(key, values, out)
            publishing += clock() - t1
            evaluating += t1 - t0
        if timed is not None:
            timed["evaluate"] = timed.get("evaluate", 0.0) + evaluating
            timed["publish"] = timed.get("publish", 0.0) + publishing
        return out, len(due)


def settings_for(periods: str, now_us: int) -> KpiSettings:
    kinds = tuple(kind for kind in periods.split(",") if kind)
    return dataclasses.replace(KpiSettings.from_env(), periods=kinds, clock=ClockSetting("pinned", now_us))


def write_events(config: generator.GeneratorConfig, path: Path, partitions: int) -> int:
    """The generator's input events as `partition<TAB>raw` lines (the partition Kafka's default
    partitioner gives the key: the worker's engine for it)."""
    count = 0
    with open(path, "wb") as out:
        for message in generator.generate(config):
            if message.topic not in INPUTS:
                continue
            partition = kafka_partition(message.key, partitions) if message.key else 0
            out.write(b"%d\t%s\n" % (partition, message.value))
            count += 1
    return count


def read_events(path: str) -> list[tuple[int, bytes]]:
    out = []
    with open(path, "rb") as handle:
        for line in handle:
            partition, _, raw = line.rstrip(b"\n").partition(b"\t")
            out.append((int(partition), raw))
    return out


# -- 1 and 2: the pipeline, per event -----------------------------------------------------------------

def child_pipeline(args) -> dict:
    lines = read_events(args.file)
    now_us = int(args.now_us)
    settings = settings_for(args.periods, now_us)
    pipeline = Pipeline(settings, now_us, args.partitions)
    warm = int(len(lines) * args.warm)
    timed_lines = lines[warm:warm + args.limit] if args.limit else lines[warm:]
    every = args.flush_every
    for start in range(0, warm, every):  # state, untimed: the same loop
        pipeline.apply(lines[start:start + every])
        pipeline.receive(pipeline.flush(now_us))
        pipeline.follow(now_us)
        pipeline.publish(now_us)
    freeze_long_lived()  # as the worker does once recovered
    collect_young_less_often()
    clock = time.process_time
    apply_s = flush_s = receive_s = 0.0
    timed: dict = {}
    updates = scopes = rounds = rejected = 0
    for start in range(0, len(timed_lines), every):
        t0 = clock()
        rejected += pipeline.apply(timed_lines[start:start + every])
        t1 = clock()
        messages = pipeline.flush(now_us)
        t2 = clock()
        pipeline.receive(messages)
        pipeline.follow(now_us)
        t3 = clock()
        out, evaluated = pipeline.publish(now_us, timed)
        apply_s += t1 - t0
        flush_s += t2 - t1
        receive_s += t3 - t2
        updates += len(out.outgoing)
        scopes += evaluated
        rounds += 1
    n = len(timed_lines)
    per = 1e6 / n
    return {"periods": args.periods, "events": n, "rejected": rejected, "rounds": rounds,
            "apply_us": apply_s * per, "flush_us": flush_s * per, "receive_us": receive_s * per,
            "evaluate_us": timed.get("evaluate", 0.0) * per, "publish_us": timed.get("publish", 0.0) * per,
            "updates_per_event": updates / n, "scopes_per_round": scopes / max(1, rounds)}


STAGE1 = ("apply_us", "flush_us")
STAGE2 = ("receive_us", "evaluate_us", "publish_us")


def run_child(kind: str, periods: str, extra: list[str], env: dict | None = None, prefix: list[str] = ()) -> dict:
    cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), "--child", kind, "--periods", periods, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["_stderr"] = done.stderr
    return result


def part_pipeline(args, path: Path, now_us: int, periods: str) -> None:
    extra = ["--file", str(path), "--now-us", str(now_us), "--partitions", str(args.partitions),
             "--warm", str(args.warm), "--flush-every", str(args.flush_every)]
    runs: dict[str, list[dict]] = {periods: [], "": []}
    for pair in range(args.pairs):
        order = (periods, "") if pair % 2 == 0 else ("", periods)  # alternated: drift cancels
        for variant in order:
            stolen, started = stolen_cpu_seconds(), time.perf_counter()
            result = run_child("pipeline", variant, extra)
            result["steal"] = (stolen_cpu_seconds() - stolen) / (time.perf_counter() - started)
            runs[variant].append(result)
    with_p, without = runs[periods], runs[""]
    first = with_p[0]
    print(f"1. pipeline per event, CPU time (us per timed event; {first['events']} timed events after "
          f"{args.warm:.0%} untimed, {args.partitions} engines, a flush and a round every {args.flush_every} events: "
          f"{first['scopes_per_round']:.0f} scopes and {first['updates_per_event'] * args.flush_every:.0f} updates "
          f"per round with periods, {without[0]['scopes_per_round']:.0f} and "
          f"{without[0]['updates_per_event'] * args.flush_every:.0f} without)")
    columns = ("apply_us", "flush_us", "receive_us", "evaluate_us", "publish_us")
    print(f"   {'KPI_PERIODS':<26} {'decode+apply':>12} {'s1 flush':>9} {'s2 receive':>10} {'s2 eval':>8} "
          f"{'s2 publish':>10} {'stage 1':>8} {'whole':>8}  steal")
    for pair in range(args.pairs):
        for variant, result in ((periods, with_p[pair]), ("", without[pair])):
            s1 = sum(result[c] for c in STAGE1)
            whole = s1 + sum(result[c] for c in STAGE2)
            print(f"   {variant or '(none)':<26} " + " ".join(f"{result[c]:{w}.1f}" for c, w in zip(columns, (12, 9, 10, 8, 10)))
                  + f" {s1:8.1f} {whole:8.1f}  {result['steal']:.2f}")

    def ratios(fn) -> list[float]:
        return [fn(a) / fn(b) for a, b in zip(with_p, without)]
    for title, fn in (("decode + apply", lambda r: r["apply_us"]),
                      ("stage 1 (decode + apply + flush with period groups)", lambda r: sum(r[c] for c in STAGE1)),
                      ("stage 2 (receive + evaluate + publish), per event", lambda r: sum(r[c] for c in STAGE2)),
                      ("whole (stage 1 + stage 2)", lambda r: sum(r[c] for c in STAGE1 + STAGE2))):
        values = ratios(fn)
        print(f"   periods / none, {title}: median {statistics.median(values):.3f} "
              f"({', '.join(f'{v:.3f}' for v in values)})")


def callgrind_instructions(periods: str, extra: list[str], limit: int) -> int:
    valgrind = shutil.which("valgrind")
    prefix = [valgrind, "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    result = run_child("pipeline", periods, [*extra, "--limit", str(limit)], prefix=prefix)
    found = re.findall(r"Collected : (\d+)", result["_stderr"])
    if not found:
        raise RuntimeError(f"no instruction count from callgrind:\n{result['_stderr'][-2000:]}")
    return int(found[-1])


def part_callgrind(args, periods: str) -> None:
    """On a file of its own (--callgrind-file events, --callgrind-outlets): callgrind runs Python
    ~50x slower, warm-up included."""
    from concurrent.futures import ThreadPoolExecutor

    if not shutil.which("valgrind"):
        print("2. callgrind: valgrind not installed, skipped")
        return
    config = bench_config(args.callgrind_file, args.callgrind_outlets, args.days)
    workdir = tempfile.mkdtemp(prefix="kpi-periods-cg-")
    path = Path(workdir) / "events.txt"
    count = write_events(config, path, args.partitions)
    warm = 0.4
    small, large = args.callgrind_events
    large = min(large, count - int(count * warm))
    extra = ["--file", str(path), "--now-us", str(generator.now_us(config)), "--partitions", str(args.partitions),
             "--warm", str(warm), "--flush-every", str(args.flush_every)]
    jobs = [(variant, limit) for variant in (periods, "") for limit in (small, large)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # counts do not depend on load
        counts = dict(zip(jobs, pool.map(lambda job: callgrind_instructions(job[0], extra, job[1]), jobs)))
    per_event = {variant: (counts[(variant, large)] - counts[(variant, small)]) / (large - small)
                 for variant in (periods, "")}
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"2. callgrind, instructions per event (part 1's pipeline on {count} events, {args.callgrind_outlets} outlets, "
          f"{warm:.0%} untimed, then timed events {small + 1}-{large}):")
    print(f"   KPI_PERIODS={periods}: {per_event[periods]:,.0f}   KPI_PERIODS= (none): {per_event['']:,.0f}   "
          f"periods / none: {per_event[periods] / per_event['']:.3f}")


# -- 3: a worker ----------------------------------------------------------------------------------------

def part_worker(args, periods: str) -> None:
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    from harness import (PARTITIONS, WorkerCpu, as_of_text, broker_and_redis, input_messages, load_topics,
                         worker_throughput)
    from stream.kafka.topics import TopicNames, ensure_topics
    from tests.e2e.harness import unique_names

    async def internal_topics(bootstrap: str, prefix: str, app_id: str) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await ensure_topics(admin, TopicNames(prefix, app_id), int(PARTITIONS), 1)
        await admin.close()

    with broker_and_redis("kpi-bench-periods-", keep=False) as (workdir, broker, redis):
        config = bench_config(args.worker_events, args.outlets, args.days)
        messages = input_messages(config)
        prefix, app_id = unique_names()
        load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
        total = len(messages)
        as_of = as_of_text(config)
        rows: dict[str, list[tuple[float, float, float]]] = {periods: [], "": []}
        for pair in range(args.worker_pairs):
            order = ("", periods) if pair % 2 == 0 else (periods, "")
            for variant in order:
                run_app = f"{app_id}-{pair}-{'p' if variant else 'n'}"
                asyncio.run(internal_topics(broker.bootstrap, prefix, run_app))
                (workdir / run_app).mkdir()
                cpu = WorkerCpu()
                rate, _ = worker_throughput(broker.bootstrap, redis.url, prefix, run_app, total, as_of,
                                           workdir / run_app, 1, cpu=cpu, env={"KPI_PERIODS": variant})
                rows[variant].append((rate, cpu.cpu_seconds / total * 1e6, cpu.stolen_seconds / max(cpu.seconds, 1e-9)))
    print(f"3. worker, catching up on {total} events ({args.worker_events} generated, {args.outlets} outlets, "
          f"{config.days} days; KPI_PUBLISH_INTERVAL=1, {PARTITIONS} partitions):")
    for pair in range(args.worker_pairs):
        for variant in (periods, ""):
            rate, cpu_us, steal = rows[variant][pair]
            print(f"   KPI_PERIODS={variant or '(none)':<24} {rate:8.0f} events/s  {cpu_us:6.1f} us of CPU per event  "
                  f"steal {steal:.2f} of a core")
    cpu_ratios = [a[1] / b[1] for a, b in zip(rows[periods], rows[""])]
    rate_ratios = [b[0] / a[0] for a, b in zip(rows[periods], rows[""])]
    print(f"   periods / none, CPU per event: median {statistics.median(cpu_ratios):.3f} "
          f"({', '.join(f'{v:.3f}' for v in cpu_ratios)}); time per event (1/rate): median "
          f"{statistics.median(rate_ratios):.3f} ({', '.join(f'{v:.3f}' for v in rate_ratios)})")


# -- 4: the month boundary ----------------------------------------------------------------------------

def window_of(body: bytes) -> str:
    return orjson.loads(body)["window"]


def classify(out: RoundOutput, designators_before: set[str]) -> dict[str, int]:
    counts = {"aliases (today..qtd, lmtd)": 0, "designators newly published": 0, "designators published before": 0,
              "rolling windows or none": 0}
    for body in out.redis.values():
        window = window_of(body)
        if window in ALIAS_WINDOWS:
            counts["aliases (today..qtd, lmtd)"] += 1
        elif window is not None and is_designator(window):
            counts["designators newly published" if window not in designators_before
                   else "designators published before"] += 1
        else:
            counts["rolling windows or none"] += 1
    return counts


def child_boundary(args) -> dict:
    settings0 = settings_for(args.periods, 0)
    calendar = Calendar(settings0.timezone, settings0.periods or ("day",))
    boundary = calendar.day_start_us(dt.date.fromisoformat(args.boundary))
    start = boundary - 90_000_000
    config = dataclasses.replace(bench_config(args.boundary_events, args.boundary_outlets, args.boundary_days),
                                 end=format_rfc3339_us(start))
    with tempfile.TemporaryDirectory(prefix="kpi-boundary-") as workdir:
        path = Path(workdir) / "events.txt"
        write_events(config, path, args.partitions)
        lines = read_events(str(path))
    settings = settings_for(args.periods, start)
    pipeline = Pipeline(settings, start, args.partitions)
    for first in range(0, len(lines), 50_000):
        pipeline.apply(lines[first:first + 50_000])
    pipeline.receive(pipeline.flush(start))
    pipeline.follow(start)
    initial, initial_scopes = pipeline.publish(start)
    result = {"events": len(lines), "outlets": sum(len(e.outlets) for e in pipeline.engines),
              "scopes": len(pipeline.board), "initial_updates": len(initial.outgoing),
              "initial_scopes": initial_scopes, "boundary": format_rfc3339_us(boundary), "steps": {}}

    clock = time.process_time

    def step(name: str, as_of: int) -> None:
        """As the worker meets an instant: stage 2's round reaches it first (a tick after it, the
        stage-1 flush's partials still on their way), then stage 1's flush and stage 2's round for it."""
        designators_before = set(pipeline.periods._published_designators) or (
            pipeline.periods.reader.designators(pipeline.periods.clock) if pipeline.periods.clock else set())
        timed: dict = {}
        t0 = clock()
        crossed = pipeline.follow(as_of)
        out_a, scopes_a = pipeline.publish(as_of, timed)
        t1 = clock()
        messages = pipeline.flush(as_of)
        t2 = clock()
        received = pipeline.receive(messages)
        t3 = clock()
        timed_b: dict = {}
        out_b, scopes_b = pipeline.publish(as_of, timed_b)
        t4 = clock()
        result["steps"][name] = {
            "crossed": crossed,
            "round_a_s": t1 - t0, "round_a_scopes": scopes_a, "round_a_updates": len(out_a.outgoing),
            "round_a_evaluate_s": timed.get("evaluate", 0.0), "round_a_publish_s": timed.get("publish", 0.0),
            "round_a_kinds": classify(out_a, designators_before),
            "resend_s": t2 - t1, "resend_scopes": received, "resend_bytes": sum(len(m) for m in messages),
            "receive_s": t3 - t2,
            "round_b_s": t4 - t3, "round_b_scopes": scopes_b, "round_b_updates": len(out_b.outgoing),
            "round_b_evaluate_s": timed_b.get("evaluate", 0.0), "round_b_publish_s": timed_b.get("publish", 0.0),
            "round_b_kinds": classify(out_b, designators_before)}

    step("ordinary slot (reference)", boundary - 30_000_000)
    step("local midnight of the 1st", boundary + 30_000_000)
    return result


def part_boundary(args, periods: str) -> None:
    extra = ["--boundary", args.boundary, "--boundary-outlets", str(args.boundary_outlets),
             "--boundary-events", str(args.boundary_events), "--boundary-days", str(args.boundary_days),
             "--partitions", str(args.partitions)]
    result = run_child("boundary", periods, extra)
    print(f"4. the publication burst at local midnight of {args.boundary} ({result['boundary']}), "
          f"KPI_PERIODS={periods}: {result['events']} events over {args.boundary_days} days, "
          f"{result['outlets']} outlets tracked in {args.partitions} engines, {result['scopes']} scopes; "
          f"first publication {result['initial_updates']} updates of {result['initial_scopes']} scopes")
    for name, s in result["steps"].items():
        print(f"   {name}{' (a period boundary)' if s['crossed'] else ''}:")
        print(f"     stage 2 round at the new as_of, before stage 1's partials: {s['round_a_scopes']} scopes, "
              f"{s['round_a_updates']} updates, {s['round_a_s'] * 1000:.0f} ms CPU "
              f"(evaluate {s['round_a_evaluate_s'] * 1000:.0f}, publish {s['round_a_publish_s'] * 1000:.0f})")
        if s["round_a_updates"]:
            print(f"       by window: {s['round_a_kinds']}")
        print(f"     stage 1 flush (advance, take_dirty, period_groups, encoding): {s['resend_scopes']} scopes, "
              f"{s['resend_bytes'] / 1e6:.1f} MB, {s['resend_s'] * 1000:.0f} ms CPU; stage 2 receive "
              f"{s['receive_s'] * 1000:.0f} ms")
        print(f"     stage 2 round for those partials: {s['round_b_scopes']} scopes, {s['round_b_updates']} updates, "
              f"{s['round_b_s'] * 1000:.0f} ms CPU (evaluate {s['round_b_evaluate_s'] * 1000:.0f}, "
              f"publish {s['round_b_publish_s'] * 1000:.0f})")
        if s["round_b_updates"]:
            print(f"       by window: {s['round_b_kinds']}")
        total = s["round_a_s"] + s["resend_s"] + s["receive_s"] + s["round_b_s"]
        print(f"     together {total * 1000:.0f} ms of CPU, {s['round_a_updates'] + s['round_b_updates']} updates")


# -------------------------------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="pipeline,callgrind,worker,boundary")
    parser.add_argument("--periods", default=DEFAULT_PERIODS, help="the periods variant (the other is none)")
    parser.add_argument("--events", type=int, default=200_000, help="pipeline: events generated")
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=None, help="span of event times (default: the generator's 90)")
    parser.add_argument("--partitions", type=int, default=4, help="engines (input partitions) and scope-stage partitions")
    parser.add_argument("--warm", type=float, default=0.5, help="share of the events applied untimed first")
    parser.add_argument("--flush-every", type=int, default=1000,
                        help="events per flush and round: the events of one 1 s interval at a steady rate")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--callgrind-events", type=int, nargs=2, default=(1000, 5000), metavar=("N1", "N2"),
                        help="callgrind: timed events of the short and the long run (their difference is counted)")
    parser.add_argument("--callgrind-file", type=int, default=10_000, help="callgrind: events generated")
    parser.add_argument("--callgrind-outlets", type=int, default=2_000)
    parser.add_argument("--worker-events", type=int, default=60_000)
    parser.add_argument("--worker-pairs", type=int, default=2)
    parser.add_argument("--boundary", default="2026-12-01", help="a local date whose midnight is crossed")
    parser.add_argument("--boundary-outlets", type=int, default=20_000)
    parser.add_argument("--boundary-events", type=int, default=400_000)
    parser.add_argument("--boundary-days", type=int, default=60)
    # children
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--now-us", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "pipeline":
        print(json.dumps(child_pipeline(args)))
        return 0
    if args.child == "boundary":
        print(json.dumps(child_boundary(args)))
        return 0

    parts = set(args.parts.split(","))
    periods = args.periods
    print(f"command: {command()}")
    print(f"machine: {machine()}")
    print(f"variants: KPI_PERIODS={periods} (history {KpiSettings.from_env().period_history}, "
          f"{KpiSettings.from_env().timezone}) against KPI_PERIODS= (none); goal: <= 1.3x per event", flush=True)
    if "pipeline" in parts:
        config = bench_config(args.events, args.outlets, args.days)
        now_us = generator.now_us(config)
        with tempfile.TemporaryDirectory(prefix="kpi-periods-") as workdir:
            path = Path(workdir) / "events.txt"
            count = write_events(config, path, args.partitions)
            print(f"events: {count} over {config.days} days, {args.outlets} outlets, clock pinned at {config.end}",
                  flush=True)
            part_pipeline(args, path, now_us, periods)
    if "callgrind" in parts:
        part_callgrind(args, periods)
    if "worker" in parts:
        part_worker(args, periods)
    if "boundary" in parts:
        part_boundary(args, periods)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
