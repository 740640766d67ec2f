"""Throughput of one worker against the ceilings measured in the same run (issue 7).

    .venv/bin/python bench/throughput.py --events 1000000

1. Generates N events (realistic mix) into the input topics of a fresh local broker (untimed).
2. Times, each from a fresh consumer group, to the end of the same topics:
   a. the aiokafka ceiling: a bare getmany loop decoding every value with orjson;
   b. the Faust ceiling: an empty Faust agent with the worker's settings that only decodes;
   c. the worker: from start until its published values are final (equal to the oracle's when
      --check, else until kpi.updates stops changing).
Prints events/s for each, c/b and c/a, with the machine and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stream import generator  # noqa: E402
from stream.devtools.localstack import KafkaBroker, RedisServer  # noqa: E402
from stream.cli import use_event_loop  # noqa: E402
from stream.core.config import event_loop_from_env  # noqa: E402
from stages import PY_SPY_HZ, print_py_spy_summary, print_stage_costs  # noqa: E402
from tests.e2e.harness import WorkerProcess, produce, unique_names, worker_env  # noqa: E402

INPUTS = ("sales.outlets", "sales.orders", "sales.visits", "sales.leads", "sales.activities")


def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, Python {platform.python_version()}"


def stolen_cpu_seconds() -> float:
    """CPU time the hypervisor took from this (virtual) machine since boot, all cores: the `steal`
    column of /proc/stat. On the benchmark VM it reached 0.5-1 of its 2 cores for tens of seconds
    at a time, and the worker's lag bursts followed it (bench/README.md, thirteenth session)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


@contextmanager
def broker_and_redis(prefix: str, keep: bool = False) -> Iterator[tuple[Path, KafkaBroker, RedisServer]]:
    """A fresh run directory with a local broker and Redis of its own, both stopped (by pid)
    however the run ends; the directory (logs, broker data) is then kept or removed. Every
    broker benchmark here runs inside one."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        broker = KafkaBroker().start(workdir / "kafka")
        try:
            redis = RedisServer().start(workdir / "redis")
            try:
                yield workdir, broker, redis
            finally:
                redis.stop()
        finally:
            broker.stop()
    finally:
        if keep:
            print(f"run directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def bench_config(events: int, outlets: int, days: int | None = None, reps: int | None = None) -> generator.GeneratorConfig:
    """The generated traffic every benchmark here uses: realistic mix, late events, no junk.
    `days`: the span of event times, `reps`: the field force (None: the generator's defaults, 90
    days and 60 reps)."""
    overrides = {name: value for name, value in (("days", days), ("reps", reps)) if value is not None}
    return generator.GeneratorConfig(seed=7, events=events, outlets=outlets, duplicate_fraction=0.0,
                                     late_fraction=0.03, malformed_fraction=0.0, **overrides)


def as_of_text(config: generator.GeneratorConfig) -> str:
    """The generator's "now" as RFC 3339: the pinned clock of every run."""
    as_of = generator.format_now(config) if hasattr(generator, "format_now") else None
    if as_of is None:
        from stream.core.timeparse import format_rfc3339_us
        as_of = format_rfc3339_us(generator.now_us(config))
    return as_of


def load_topics(bootstrap: str, messages: list, prefix: str, app_id: str) -> None:
    """Create the topics the way the worker does, then produce `messages` to them."""
    from aiokafka.admin import AIOKafkaAdminClient
    from stream.kafka.topics import TopicNames, ensure_topics

    async def load() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await ensure_topics(admin, TopicNames(prefix, app_id), int(os.environ.get("BENCH_PARTITIONS", "4")), 1)
        await admin.close()
        await produce(bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages))

    asyncio.run(load())


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
from stream.worker.app import BytesAsFetched, fetch_like_the_worker
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
    from stream.worker.app import INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS
    for n, names in enumerate([("sales.outlets", "sales.orders", "sales.visits"), ("sales.leads",), ("sales.activities",)]):
        async def decode_batches(stream):
            async for events in stream.take_events(INPUT_BATCH_MAX, INPUT_BATCH_WAIT_SECONDS):
                for event in events:
                    count(event.message.value)
        app.agent(app.topic(*[prefix + t for t in names], schema=BytesAsFetched()), name=f"family-{n}")(decode_batches)
else:
    # the worker's topics hand messages over as the bytes fetched (stream.worker.app.BytesAsFetched)
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


class WorkerCpu:
    """CPU seconds of the worker processes (every thread) over the timed span: whether a second
    worker adds work per event, apart from whether this machine has the cores to run it."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.cpu_at_start = self.stolen_at_start = 0.0
        self.started = self.seconds = self.cpu_seconds = self.stolen_seconds = 0.0

    @staticmethod
    def _cpu_seconds(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def start(self, pids: list[int], now: float) -> None:
        self.pids, self.started = pids, now
        self.cpu_at_start = sum(self._cpu_seconds(pid) for pid in pids)
        self.stolen_at_start = stolen_cpu_seconds()

    def stop(self, now: float) -> None:
        if self.pids:
            self.seconds = now - self.started
            self.cpu_seconds = sum(self._cpu_seconds(pid) for pid in self.pids) - self.cpu_at_start
            self.stolen_seconds = stolen_cpu_seconds() - self.stolen_at_start


class LagStandstill:
    """How long an input partition waited for its turn while the worker caught up, from the
    worker's own consumer-lag gauge (set once per 5 s lag round, so 5 s is the resolution)."""

    def __init__(self) -> None:
        self.since: dict[tuple[str, str], tuple[float, float]] = {}
        self.longest_s = 0.0
        self.where = "-"
        self.updates_published = 0.0  # at the last poll: context for the events/s

    def observe(self, metrics_text: str, now: float) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(metrics_text):
            for sample in family.samples:
                if sample.name == "kpi_stream_kpi_updates_published_total":
                    self.updates_published = sample.value
                if sample.name != "kpi_stream_consumer_lag":
                    continue
                key = (sample.labels["topic"], sample.labels["partition"])
                value, since = self.since.get(key, (None, now))
                if value != sample.value or sample.value == 0:
                    self.since[key] = (sample.value, now)
                elif now - since > self.longest_s:
                    self.longest_s, self.where = now - since, f"{key[0]}[{key[1]}] at lag {value:.0f}"


# what the poll below needs, not the full exposition (a series per exported KPI: ~2 % of the
# worker's time when rendered every 0.5 s)
PROGRESS_METRICS = ("/metrics?name[]=kpi_stream_events_consumed_total&name[]=kpi_stream_consumer_lag"
                    "&name[]=kpi_stream_kpi_updates_published_total")


def worker_throughput(bootstrap: str, redis_url: str, prefix: str, app_id: str, total: int, as_of: str,
                      workdir: Path, workers: int, profile: Path | None = None,
                      settle: Callable[[], bool] | None = None, settle_timeout: float = 300.0,
                      standstill: LagStandstill | None = None,
                      cpu: WorkerCpu | None = None, py_spy: Path | None = None,
                      publish_interval: float = 1.0) -> tuple[float, float]:
    """Events/s until every input event is consumed: (from the first event consumed -- how the
    empty Faust agent is timed --, from worker start, i.e. with Faust's start-up and recovery).
    With `cpu`, the workers' CPU time over the same span is recorded there.
    With `profile`, the (first) worker runs under cProfile and its stats are written there.
    With `py_spy`, the (first) worker is sampled by py-spy over the same span (collapsed stacks).
    `publish_interval` is the workers' KPI_PUBLISH_INTERVAL: the service's default unless a
    benchmark measures another (the end-to-end tests' harness sets 0.5 s).
    With `settle`, the workers are kept running (untimed) until settle() is true or
    `settle_timeout` seconds have passed, e.g. until their output equals the oracle's."""
    from tests.e2e.harness import counter_total

    env = worker_env(bootstrap, redis_url, prefix, app_id, workdir / "state", KPI_CLOCK=as_of,
                     KPI_PARTITIONS=os.environ.get("BENCH_PARTITIONS", "4"), KPI_LOG_LEVEL="WARNING",
                     KPI_PUBLISH_INTERVAL=str(publish_interval))
    procs = [WorkerProcess(env, workdir / f"worker{i}.log",
                           python_args=["-m", "cProfile", "-o", str(profile)] if profile and i == 0 else []).start()
             for i in range(workers)]
    started = time.perf_counter()
    first_at = None
    spy: subprocess.Popen | None = None
    try:
        while True:
            consumed = 0.0
            for proc in procs:
                if not proc.alive():
                    raise RuntimeError(proc.log_tail())
                try:
                    status, body = proc.get(PROGRESS_METRICS, timeout=10)
                except OSError:
                    continue
                if status == 200:
                    consumed += counter_total(body.decode(), "kpi_stream_events_consumed_total")
                    if standstill is not None:
                        standstill.observe(body.decode(), time.perf_counter())
            if consumed >= total:
                break
            if consumed and first_at is None:
                first_at = time.perf_counter()  # polled every 0.5 s: up to 0.5 s late
                if cpu is not None:
                    cpu.start([proc.process.pid for proc in procs], first_at)
                if py_spy is not None:
                    spy = start_py_spy(procs[0].process.pid, py_spy)
            time.sleep(0.5)
        consumed_at = time.perf_counter()
        if spy is not None:
            stop_py_spy(spy)
            spy = None
        if cpu is not None:
            cpu.stop(consumed_at)
        time.sleep(3)  # one more publication round after the last event
        deadline = time.monotonic() + settle_timeout
        while settle is not None and not settle() and time.monotonic() < deadline:
            time.sleep(2)
        return total / (consumed_at - (first_at or started)), total / (consumed_at - started)
    finally:
        if spy is not None:
            stop_py_spy(spy)
        for proc in procs:
            proc.stop()


def start_py_spy(pid: int, output: Path) -> subprocess.Popen:
    """py-spy (sampling: no tracing overhead, unlike --profile) on the worker until stop_py_spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(PY_SPY_HZ), "--format", "raw",
                             "--output", str(output), "--nonblocking", "--idle"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled when interrupted
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()


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
        messages = [m for m in generator.generate(config) if m.topic in INPUTS]
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
            print_stage_costs(args.py_spy, total, PY_SPY_HZ, ", first event to last")
        print(f"command: {' '.join(sys.argv)}")
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
