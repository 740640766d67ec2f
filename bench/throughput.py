"""Throughput of one worker against the ceilings measured in the same run (issue 7).

    .venv/bin/python bench/throughput.py --events 1000000

1. Generates N events (realistic mix) into the input topics of a fresh local broker (untimed).
2. Times, each from a fresh consumer group, to the end of the same topics:
   a. the aiokafka ceiling: a bare getmany loop decoding every value with orjson;
   b. the Faust ceiling: an empty Faust agent with the worker's settings that only decodes;
   c. the worker (--workers N of them, one consumer group), from its first event consumed to its
      last, at the service's publish interval (--publish-interval).
Prints events/s for each, c/b and c/a, the workers' CPU per event and the hypervisor's steal,
with the machine and the command. Two workers against one: --skip-ceilings --workers 2, then 1.
Shared code: bench/harness.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

from harness import (  # first: it puts the repository on sys.path
    INPUTS, REPO, LagStandstill, WorkerCpu, as_of_text, bench_config, broker_and_redis, command, input_messages,
    load_topics, machine, print_py_spy_summary, print_stage_costs, stolen_cpu_seconds, worker_throughput,
)
from stream.cli import use_event_loop
from stream.core.config import event_loop_from_env
from tests.e2e.harness import unique_names


async def aiokafka_ceiling(bootstrap: str, topics: list[str], total: int) -> float:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=f"ceiling-{time.time_ns()}",
                                auto_offset_reset="earliest", enable_auto_commit=False, max_poll_records=5000)
    await consumer.start()
    started = time.perf_counter()
    seen = 0
    try:
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            for records in batch.values():
                for record in records:
                    try:
                        orjson.loads(record.value)
                    except orjson.JSONDecodeError:
                        pass
                    seen += 1
    finally:
        await consumer.stop()
    return seen / (time.perf_counter() - started)


FAUST_CEILING = r'''
import asyncio, os, sys, time, orjson, faust
env = os.environ
bootstrap, prefix, total, app_id = env["BENCH_BOOTSTRAP"], env["BENCH_PREFIX"], int(env["BENCH_TOTAL"]), env["BENCH_APP"]
app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://", key_serializer="raw",
                value_serializer="raw", consumer_auto_offset_reset="earliest", web_enabled=False,
                broker_max_poll_records=500, topic_allow_declare=False, env_prefix="KPI_FAUST_")
sys.path.insert(0, env["BENCH_REPO"])
from stream.core.config import ServiceSettings
from stream.kafka.faust_internals import BytesAsFetched, fetch_like_the_worker
settings = ServiceSettings.from_env()
fetch_like_the_worker(app, settings.fetch_max_wait_ms, settings.fetch_min_bytes)
from stream.cli import use_event_loop
from stream.core.config import event_loop_from_env
use_event_loop(event_loop_from_env())  # the worker's kind of loop (KPI_EVENT_LOOP); faust makes it
state = {"n": 0, "t0": None}
def count(value):
    if state["t0"] is None:
        state["t0"] = time.perf_counter()
        state["cpu0"] = time.process_time()  # every thread of this process, as the worker's is measured
        state["loop"] = type(asyncio.get_running_loop()).__module__
    try:
        orjson.loads(value)
    except orjson.JSONDecodeError:
        pass
    state["n"] += 1
    if state["n"] >= total:
        cpu_us = (time.process_time() - state["cpu0"]) / state["n"] * 1e6
        print(f"RESULT {state['n'] / (time.perf_counter() - state['t0']):.1f} on {state['loop']} cpu {cpu_us:.1f}", flush=True)
        os._exit(0)
if env.get("BENCH_SHAPE") == "worker":
    # the worker's shape: one agent per family (its topics), events taken in batches as it takes them
    from stream.worker.entity_stage import INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS
    for n, names in enumerate([("sales.outlets", "sales.orders", "sales.visits"), ("sales.leads",), ("sales.activities",)]):
        async def decode_batches(stream):
            async for events in stream.take_events(INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS):
                for event in events:
                    count(event.message.value)
        app.agent(app.topic(*[prefix + t for t in names], schema=BytesAsFetched()), name=f"family-{n}")(decode_batches)
else:
    # the worker's topics hand messages over as the bytes fetched (stream.kafka.faust_internals.BytesAsFetched)
    @app.agent(app.topic(*[prefix + t for t in ("sales.outlets","sales.orders","sales.visits","sales.leads","sales.activities")],
                         schema=BytesAsFetched()))
    async def decode_only(stream):
        async for value in stream:
            count(value)
app.main()
'''


def faust_ceiling(bootstrap: str, prefix: str, total: int, workdir: Path,
                  shape: str = "one-agent") -> tuple[float, str, float]:
    """(events/s, the module of the event loop the agent ran on, us of CPU per event: every
    thread of the process, from its first event to its last, like the worker's)."""
    script = workdir / "faust_ceiling.py"
    script.write_text(FAUST_CEILING)
    env = dict(os.environ, BENCH_BOOTSTRAP=bootstrap, BENCH_PREFIX=prefix, BENCH_TOTAL=str(total),
               BENCH_APP=f"ceiling-{time.time_ns()}", BENCH_REPO=str(REPO), BENCH_SHAPE=shape)
    result = subprocess.run([sys.executable, str(script), "worker", "-l", "warn", "--without-web"],
                            capture_output=True, text=True, timeout=3600, cwd=workdir, env=env)
    for line in (result.stdout + result.stderr).splitlines():  # faust may route stdout to its log
        if "RESULT " in line:
            rate, _on, loop, _cpu, cpu_us = line.split("RESULT ")[1].split()[:5]
            return float(rate), loop, float(cpu_us)
    raise RuntimeError(f"faust ceiling produced no result:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--days", type=int, default=None,
                        help="span of the generated event times (default: the generator's 90 days of history; "
                             "7: every event inside every window, as in live traffic)")
    parser.add_argument("--profile", type=Path, help="run the worker under cProfile, write stats here, print the top")
    parser.add_argument("--py-spy", type=Path, metavar="FILE",
                        help="sample the worker with py-spy from its first event to its last (collapsed stacks "
                             "to FILE) and print where its time goes")
    parser.add_argument("--publish-interval", type=float, default=1.0,
                        help="the worker's KPI_PUBLISH_INTERVAL (default: the service's default, 1.0)")
    parser.add_argument("--skip-ceilings", action="store_true", help="time only the worker (with --profile)")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (broker data, logs)")
    parser.add_argument("--worker-shaped-ceiling", action="store_true",
                        help="also time empty agents in the worker's shape (one per family, take_events)")
    args = parser.parse_args()
    with broker_and_redis("kpi-bench-", keep=args.keep) as (workdir, broker, redis):
        config = bench_config(args.events, args.outlets, args.days)
        messages = input_messages(config)
        as_of = as_of_text(config)
        prefix, app_id = unique_names()
        load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
        total = len(messages)
        topics = [prefix + t for t in INPUTS]
        loop_kind = event_loop_from_env()
        use_event_loop(loop_kind)  # the worker's kind of loop for the ceilings too (KPI_EVENT_LOOP)
        b_loop = "-"
        if args.skip_ceilings:
            a = b = b_cpu_us = float("nan")
        else:
            a = asyncio.run(aiokafka_ceiling(broker.bootstrap, topics, total))
            stolen, started = stolen_cpu_seconds(), time.perf_counter()
            b, b_loop, b_cpu_us = faust_ceiling(broker.bootstrap, prefix, total, workdir)
            b_steal = (stolen_cpu_seconds() - stolen) / (time.perf_counter() - started)
        b_shaped = faust_ceiling(broker.bootstrap, prefix, total, workdir, "worker")[0] if args.worker_shaped_ceiling else None
        standstill = LagStandstill()
        cpu = WorkerCpu()
        c, c_with_startup = worker_throughput(broker.bootstrap, redis.url, prefix, app_id, total, as_of, workdir, args.workers,
                              profile=args.profile, standstill=standstill, cpu=cpu, py_spy=args.py_spy,
                              publish_interval=args.publish_interval)
        if args.profile:
            import pstats

            print(f"profile of the worker (cProfile, {args.profile}), top 30 by own time:")
            pstats.Stats(str(args.profile)).sort_stats("tottime").print_stats(30)
        if args.py_spy:
            print_py_spy_summary(args.py_spy)
            print_stage_costs(args.py_spy, total, ", first event to last")
        print(f"command: {command()}")
        print(f"machine: {machine()}")
        print(f"events: {total} over {config.days} days of event time, {args.outlets} outlets")
        print(f"event loop: KPI_EVENT_LOOP={loop_kind} (the worker's; ceiling b ran on {b_loop})")
        print(f"a. aiokafka getmany + orjson ceiling: {a:10.0f} events/s")
        print(f"b. empty Faust agent (decode only):   {b:10.0f} events/s" + (
            f"   ({b_cpu_us:.0f} us of CPU per event; hypervisor steal over its run, start-up included: "
            f"{b_steal:.2f} of a core)" if not args.skip_ceilings else ""))
        print(f"c. kpi-stream worker x{args.workers}:            {c:10.0f} events/s "
              f"(first event to last; {c_with_startup:.0f} events/s from process start; "
              f"KPI_PUBLISH_INTERVAL={args.publish_interval:g})")
        if b_shaped is not None:
            print(f"b'. empty agents in the worker's shape (3 families, take_events): {b_shaped:10.0f} events/s "
                  f"(b'/b = {b_shaped / b:.2f}; c/b' = {c / b_shaped:.2f})")
        print(f"c/b = {c / b:.2f}   c/a = {c / a:.3f}")
        if cpu.seconds:
            print(f"workers' CPU (all threads) from first event to last: {cpu.cpu_seconds:.1f} s in {cpu.seconds:.1f} s "
                  f"= {cpu.cpu_seconds / cpu.seconds:.2f} of {os.cpu_count()} cores; "
                  f"{cpu.cpu_seconds / total * 1e6:.0f} us of CPU per event")
            print(f"CPU taken by the hypervisor over the same span (/proc/stat steal): {cpu.stolen_seconds:.1f} s "
                  f"= {cpu.stolen_seconds / cpu.seconds:.2f} of a core on average")
            if not args.skip_ceilings and args.workers == 1:
                # time the hypervisor took is not charged to a process: a ratio of CPU per event is
                # steadier than c/b on a VM where steal comes and goes between the two runs
                print(f"c/b by CPU per event (b's us / c's us): {b_cpu_us / (cpu.cpu_seconds / total * 1e6):.2f}")
        print(f"longest a partition's lag stood still while the worker was behind: {standstill.longest_s:.0f} s "
              f"({standstill.where}; the lag gauge moves once per 5 s lag round: 5 s means no stand-still seen)")
        print(f"KPI updates published by then: {standstill.updates_published:.0f} "
              f"(fresher partials publish more updates for the same events)")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
