"""What the benchmarks share: the machine line, the generated traffic, a broker and Redis in a run
directory, workers started, timed and scraped, /proc readers, and py-spy cut into the worker's
stages. Every figure a benchmark prints comes with its command and `machine()`, next to a ceiling
measured in the same run (bench/README.md).
"""

from __future__ import annotations

import asyncio
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from stream.devtools import generator  # noqa: E402

INPUTS = ("sales.outlets", "sales.orders", "sales.visits", "sales.leads", "sales.activities")
PARTITIONS = os.environ.get("BENCH_PARTITIONS", "4")  # of every topic a benchmark creates


# -- the machine and this process ---------------------------------------------------------------

def machine() -> str:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.machine()}, {os.cpu_count()} cores, {memory_gib:.0f} GiB, Python {platform.python_version()}"


def command() -> str:
    return " ".join(sys.argv)


def stolen_cpu_seconds() -> float:
    """CPU time the hypervisor took from this (virtual) machine since boot, all cores: the `steal`
    column of /proc/stat. On the benchmark VM it reached 0.5-1 of its 2 cores for tens of seconds
    at a time, and the worker's lag bursts followed it (docs/performance.md)."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_stat(pid: int | None, thread: int | None = None) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (field 3 onwards), or None for a
    process that is not there."""
    if pid is None:
        return None
    path = f"/proc/{pid}/task/{thread}/stat" if thread is not None else f"/proc/{pid}/stat"
    try:
        return Path(path).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int | None, thread: int | None = None) -> float:
    """User + system CPU time of a process (or one of its threads) so far; 0 if it is not there."""
    fields = proc_stat(pid, thread)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0


def minor_faults(pid: int | None) -> float:
    """Minor page faults of a process so far; 0 if it is not there."""
    fields = proc_stat(pid)
    return float(fields[7]) if fields else 0.0


def rss_bytes(pid: int | str | None = "self") -> int:
    """Resident memory of a process (this one by default); 0 if it is not there."""
    if pid is None:
        return 0
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


# -- the traffic ------------------------------------------------------------------------------------

def bench_config(events: int, outlets: int, days: int | None = None, reps: int | None = None) -> generator.GeneratorConfig:
    """The generated traffic every benchmark here uses: realistic mix, 3 % late, no duplicates or
    junk, seed 7. `days`: the span of event times, `reps`: the field force (None: the generator's
    defaults, 90 days and 60 reps)."""
    overrides = {name: value for name, value in (("days", days), ("reps", reps)) if value is not None}
    return generator.GeneratorConfig(seed=7, events=events, outlets=outlets, duplicate_fraction=0.0,
                                     late_fraction=0.03, malformed_fraction=0.0, **overrides)


def input_messages(config: generator.GeneratorConfig) -> list:
    return [m for m in generator.generate(config) if m.topic in INPUTS]


def as_of_text(config: generator.GeneratorConfig) -> str:
    """The generator's "now" as RFC 3339: the pinned clock of every run."""
    from stream.core.timeparse import format_rfc3339_us

    return format_rfc3339_us(generator.now_us(config))


# -- a broker, Redis and topics ---------------------------------------------------------------------

@contextmanager
def broker_and_redis(prefix: str, keep: bool = False) -> Iterator[tuple[Path, object, object]]:
    """A fresh run directory with a local broker and Redis of its own, both stopped (by pid)
    however the run ends; the directory (logs, broker data) is then kept (--keep) or removed."""
    from stream.devtools.localstack import KafkaBroker, RedisServer

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


def load_topics(bootstrap: str, messages: list, prefix: str, app_id: str) -> None:
    """Create the topics the way the worker does, then produce `messages` to them (untimed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    from stream.kafka.topics import TopicNames, ensure_topics
    from tests.e2e.harness import produce

    async def load() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await ensure_topics(admin, TopicNames(prefix, app_id), int(PARTITIONS), 1)
        await admin.close()
        await produce(bootstrap, ((prefix + m.topic, m.key, m.value) for m in messages))

    asyncio.run(load())


# -- workers ----------------------------------------------------------------------------------------

def bench_worker_env(bootstrap: str, redis_url: str, prefix: str, app_id: str, state_dir: Path, as_of: str,
                     **extra: str) -> dict[str, str]:
    """The end-to-end harness's worker environment, clock pinned at `as_of`, quiet logs, the
    benchmarks' partitions; `extra` overrides (KPI_PUBLISH_INTERVAL: the harness sets 0.5 s for
    the tests, the benchmarks pass the interval they measure)."""
    from tests.e2e.harness import worker_env

    settings = {"KPI_CLOCK": as_of, "KPI_PARTITIONS": PARTITIONS, "KPI_LOG_LEVEL": "WARNING", **extra}
    return worker_env(bootstrap, redis_url, prefix, app_id, state_dir, **settings)


def ensure_alive(worker) -> None:
    if not worker.alive():
        raise RuntimeError(f"the worker stopped:\n{worker.log_tail()}")


def scrape(worker, path: str = "/metrics") -> str | None:
    """The worker's metrics text (all of it, or the families `path` names), or None if it does
    not answer; raises if the worker died."""
    ensure_alive(worker)
    try:
        status, body = worker.get(path, timeout=10)
    except OSError:
        return None
    return body.decode() if status == 200 else None


def is_ready(worker) -> bool:
    ensure_alive(worker)
    try:
        return worker.get("/ready", timeout=5)[0] == 200
    except OSError:
        return False


class WorkerCpu:
    """CPU seconds of the worker processes (every thread) and the hypervisor's steal over the
    timed span: whether a second worker adds work per event, apart from whether this machine has
    the cores to run it."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.cpu_at_start = self.stolen_at_start = 0.0
        self.started = self.seconds = self.cpu_seconds = self.stolen_seconds = 0.0

    def start(self, pids: list[int], now: float) -> None:
        self.pids, self.started = pids, now
        self.cpu_at_start = sum(cpu_seconds(pid) for pid in pids)
        self.stolen_at_start = stolen_cpu_seconds()

    def stop(self, now: float) -> None:
        if self.pids:
            self.seconds = now - self.started
            self.cpu_seconds = sum(cpu_seconds(pid) for pid in self.pids) - self.cpu_at_start
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
                      publish_interval: float = 1.0, env: dict[str, str] | None = None) -> tuple[float, float]:
    """Events/s until every input event is consumed: (from the first event consumed -- how the
    empty Faust agent is timed --, from worker start, i.e. with Faust's start-up and recovery).
    With `cpu`, the workers' CPU time over the same span is recorded there.
    With `profile`, the (first) worker runs under cProfile and its stats are written there.
    With `py_spy`, the (first) worker is sampled by py-spy over the same span (collapsed stacks).
    `publish_interval` is the workers' KPI_PUBLISH_INTERVAL: the service's default unless a
    benchmark measures another. `env`: more settings of the workers (e.g. KPI_PERIODS, to
    compare two variants in one run).
    With `settle`, the workers are kept running (untimed) until settle() is true or
    `settle_timeout` seconds have passed, e.g. until their output equals the oracle's."""
    from tests.e2e.harness import WorkerProcess, counter_total

    env = bench_worker_env(bootstrap, redis_url, prefix, app_id, workdir / "state", as_of,
                           KPI_PUBLISH_INTERVAL=str(publish_interval), **(env or {}))
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
                text = scrape(proc, PROGRESS_METRICS)
                if text is not None:
                    consumed += counter_total(text, "kpi_stream_events_consumed_total")
                    if standstill is not None:
                        standstill.observe(text, time.perf_counter())
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


# -- py-spy, cut into the worker's pipeline stages ----------------------------------------------------
#
# A py-spy summary by function says what is hot; the stage table says what each *stage* of the
# worker costs per input event, which is what compares a catch-up run (bench/throughput.py) with
# a steady one (bench/latency.py) on the same traffic: work done once per publish interval
# (partials, the scope stage, publication) is spread over few events at a steady rate and over
# many while catching up, and so is the per-fetch cost of faust's consumer. Samples are py-spy's
# `record --idle --format raw` lines: every sample of every thread, idle or not, so a stage's
# microseconds per event are wall time the thread spent there. Each main-thread sample counts for
# the first stage whose marker is on its stack, in the order below.

PY_SPY_HZ = 200  # the benchmarks' py-spy sampling rate

# (stage, a frame that marks it): the first match wins, so nested stages come first
STAGES: tuple[tuple[str, str], ...] = (
    ("decode + engine (per event)", "EntityStage.handle"),
    ("take_events batches", "Stream.take_events"),
    ("agent loop", "EntityStage.consume"),
    ("publication rounds", "ScopeStage.publish_round"),
    ("partials flush (stage 1)", "EntityStage.flush_partials"),
    ("scope stage (stage 2)", "ScopeStage.consume"),
    ("facts flush", "FactLog.flush"),
    ("Redis writes", "RedisService._write_redis"),
    ("faust: fetched records to streams", "Consumer._drain_messages"),
    ("faust: stream iteration", "Stream._passive_drainer"),
    ("producer (Kafka sends)", "aiokafka/producer/"),
    ("/metrics scrapes", "metrics_page"),
)
MAIN_THREAD = "_run_module_as_main"
IDLE_DEPTH = 7  # a main-thread stack this short is the event loop waiting for work (uvloop polls in C)
THREAD_IDLE_FRAME = "ServiceThread._start_thread"  # a thread of faust's waiting in its own loop


def start_py_spy(pid: int, output: Path, seconds: float | None = None, after: float = 0.0) -> subprocess.Popen:
    """py-spy (sampling: no tracing overhead in the worker) on `pid`: until stop_py_spy, or for
    `seconds` starting `after` seconds from now. FILE.json: speedscope format (samples in time
    order), else collapsed stacks."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = "speedscope" if output.suffix == ".json" else "raw"
    duration = ["--duration", str(int(seconds - after))] if seconds is not None else []
    record = [spy, "record", "--pid", str(pid), *duration, "--rate", str(PY_SPY_HZ), "--format", fmt,
              "--output", str(output), "--nonblocking", "--idle"]
    if after > 0:
        return subprocess.Popen(f"sleep {after:.1f} && " + " ".join(shlex.quote(part) for part in record), shell=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes what it sampled when interrupted
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()


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
    own: Counter = Counter()
    inclusive: Counter = Counter()
    total = 0
    for frames, count in read_samples(path):
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"py-spy: {total} samples of the worker's threads ({path})")
    for title, table in (("own", own), ("inclusive", inclusive)):
        print(f"  top {top} by {title} share:")
        for frame, count in table.most_common(top):
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


def print_stage_costs(path: Path, events: int, title: str = "") -> None:
    """Microseconds per event of each stage, of the main thread busy and idle, and of the other
    threads (faust's consumer thread: fetch requests and responses)."""
    if path.suffix == ".json" or events <= 0:
        return
    stages, busy, idle, others = stage_samples(path)
    per_event = 1e6 / PY_SPY_HZ / events
    print(f"where the worker's time went, us per event ({events} events; py-spy at {PY_SPY_HZ} Hz{title}):")
    for stage, samples in stages.most_common():
        print(f"  {samples * per_event:7.1f}  {stage}")
    print(f"  {busy * per_event:7.1f}  = main thread busy (the event loop: agents, timers, sends)")
    print(f"  {idle * per_event:7.1f}    main thread idle (waiting for work)")
    print(f"  {others * per_event:7.1f}    other threads busy (faust's consumer thread: fetch requests and responses)")
