"""`kpi-stream demo`: a local Kafka broker, Redis, one worker and the live generator, all started
here and stopped by pid on exit (Ctrl-C, SIGTERM, or after --duration seconds).

The generator writes a recent history ending now (sent at once), then live traffic on the wall
clock -- the clock the worker runs on -- so every window has values within about a minute. Each
run starts clean (new broker data, Redis and worker state) unless `keep`. While it runs it prints a
status line every few seconds (from the generator's progress file and the worker's /metrics), and a
summary at the end. The pids of what it started are in RUN_DIR/demo.json while it runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from stream.devtools.localstack import KafkaBroker, RedisServer, free_port

log = logging.getLogger(__name__)

# what the worker's data lives in under the run directory: removed at the start of a clean run
STATE_PARTS = ("kafka", "redis", "state")
HEADLINES = (("active accounts 30d", "kpi_active_accounts", "30d"), ("orders 7d", "kpi_orders", "7d"))
EXAMPLE_TERRITORY = "T03"  # the generator's territories are T00..T23


class DemoStopped(Exception):
    """SIGTERM or SIGINT arrived: stop everything and summarise."""


def worker_environment(bootstrap: str, redis_url: str, web_port: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "REDIS_URL": redis_url,
        "KPI_WEB_PORT": str(web_port),
        "KPI_WEB_HOST": "127.0.0.1",
    })
    env.update(extra or {})
    return env


def wait_http(url: str, timeout: float, alive=lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the process behind {url} exited")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


@dataclass
class Snapshot:
    """What a status line shows, read from the generator's progress file and the worker's /metrics."""

    at: float
    sent: int = 0
    live: bool = False
    applied: float = 0
    rejected: dict[str, float] = field(default_factory=dict)
    duplicates: float = 0
    lag: float | None = None
    headlines: dict[str, float | None] = field(default_factory=dict)
    worker_answered: bool = False


def read_progress(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def read_metrics(web_port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=3) as response:
            return response.read().decode()
    except OSError:
        return None


def snapshot(progress: dict, metrics_text: str | None, now: float) -> Snapshot:
    snap = Snapshot(at=now, sent=int(progress.get("sent", 0)), live=bool(progress.get("live")))
    if metrics_text is None:
        return snap
    from prometheus_client.parser import text_string_to_metric_families

    snap.worker_answered = True
    snap.lag = 0.0
    wanted = {name: window for _, name, window in HEADLINES}
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            name, labels = sample.name, sample.labels
            if name == "kpi_stream_events_consumed_total":
                snap.applied += sample.value
            elif name == "kpi_stream_deadletters_total":
                snap.rejected[labels.get("reason", "?")] = sample.value
            elif name == "kpi_stream_ignored_events_total" and labels.get("reason") == "duplicate":
                snap.duplicates += sample.value
            elif name == "kpi_stream_consumer_lag":
                snap.lag += sample.value
            elif (name in wanted and labels.get("scope") == "global" and labels.get("window") == wanted[name]):
                found[name] = sample.value
    snap.headlines = {label: found.get(name) for label, name, _ in HEADLINES}
    return snap


def _n(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"


def status_line(snap: Snapshot, previous: Snapshot | None, started: float) -> str:
    elapsed = snap.at - started
    since = previous or Snapshot(at=started)
    rate = max(0.0, (snap.sent - since.sent) / (snap.at - since.at)) if snap.at > since.at else 0.0
    phase = "live" if snap.live else "history"
    parts = [f"[{int(elapsed) // 60:02d}:{int(elapsed) % 60:02d}]",
             f"sent {_n(snap.sent)} ({rate:,.0f}/s, {phase})"]
    if not snap.worker_answered:
        parts.append("worker not answering /metrics yet")
        return "  ".join(parts)
    rejected = sum(snap.rejected.values())
    reasons = ", ".join(f"{reason} {_n(count)}" for reason, count in
                        sorted(snap.rejected.items(), key=lambda item: (-item[1], item[0])) if count)
    parts += [f"consumed {_n(snap.applied)}",
              f"rejected {_n(rejected)}" + (f" ({reasons})" if reasons else ""),
              f"duplicates {_n(snap.duplicates)}",
              f"lag {_n(snap.lag)}"]
    parts += [f"{label} {_n(value)}" for label, value in snap.headlines.items()]
    return "  ".join(parts)


def _shown(path: str) -> str:
    """A path as short as it can be shown to someone in the current directory."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return relative if not relative.startswith("..") else path


def banner(run_dir: Path, web_port: int, bootstrap: str, redis_port: int, history_days: int, history_events: int,
           rate: float, status_interval: float, pids: dict[str, int]) -> str:
    python = _shown(sys.executable)
    web = f"http://127.0.0.1:{web_port}"
    history = (f"{history_days} days of history (about {history_events:,} events and the reps' beat plans) at once, then "
               if history_events else "no new history (--keep), ")
    territory = EXAMPLE_TERRITORY
    return f"""
kpi-stream demo is running: a Kafka broker, Redis, one worker and the generator (logs and data in {run_dir}/).
The generator sends {history}live traffic on the wall clock, up to {rate:.0f} events/s in working hours.
  dashboard     {web}/dashboard
  KPI values    curl -s '{web}/kpi?kpi=active_accounts&window=30d&scope=global'
  a territory   curl -s '{web}/kpi?kpi=orders&window=7d&scope=territory&scope_id={territory}'
  metrics       curl -s {web}/metrics | grep '^kpi_orders{{.*scope="global"'
  Redis         redis-cli -p {redis_port} HGET kpi:latest 'active_accounts|30d|territory|{territory}'
  KPI topic     {python} -m stream.devtools.tail --kafka {bootstrap} kpi.updates --limit 5
  dead letters  {python} -m stream.devtools.tail --kafka {bootstrap} kpi.deadletter --limit 3
  readiness     curl -s {web}/ready
  Kafka {bootstrap}   Redis redis://127.0.0.1:{redis_port}/0   pids {', '.join(f'{k} {v}' for k, v in pids.items())}
A status line every {status_interval:g}s below; Ctrl-C or `kill -TERM {os.getpid()}` stops everything this command started.
"""


def summary(first: Snapshot | None, last: Snapshot | None, history_sent: int | None, started: float,
            run_dir: Path) -> str:
    elapsed = time.time() - started
    if last is None:
        return f"kpi-stream demo stopped after {elapsed:.0f}s (nothing was sent); logs in {run_dir}/"
    lines = [f"kpi-stream demo ran {elapsed:.0f}s: the generator sent {_n(last.sent)} messages"
             + (f" ({_n(history_sent)} of history, then {_n(last.sent - history_sent)} live)"
                if history_sent is not None else "")]
    if last.worker_answered:
        rejected = sum(last.rejected.values())
        reasons = ", ".join(f"{r} {_n(c)}" for r, c in sorted(last.rejected.items(), key=lambda i: (-i[1], i[0])) if c)
        lines.append(f"  the worker consumed {_n(last.applied)}, rejected {_n(rejected)}"
                     + (f" ({reasons})" if reasons else "")
                     + f", ignored {_n(last.duplicates)} duplicates; lag at the end {_n(last.lag)}")
        lines.append("  at the end: " + ", ".join(f"{label} {_n(value)}" for label, value in last.headlines.items()))
    lines.append(f"  everything it started is stopped; logs and data in {run_dir}/")
    return "\n".join(lines)


def _stop_process(process: subprocess.Popen, timeout: float = 20.0) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


def run_demo(run_dir: Path, duration: float | None, rate: float, events: int | None = None, *, keep: bool = False,
             history_days: int = 60, history_events: int = 40_000, status_interval: float = 5.0) -> int:
    run_dir = Path(run_dir).resolve()
    started = time.time()

    def stop(signum, frame):
        raise DemoStopped(signal.Signals(signum).name)

    previous_handlers = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    run_dir.mkdir(parents=True, exist_ok=True)
    if not keep:  # a clean start: the same events again would only be duplicates of the last run's
        for part in STATE_PARTS:
            shutil.rmtree(run_dir / part, ignore_errors=True)
    mode = "ab" if keep else "wb"
    processes: dict[str, subprocess.Popen] = {}
    broker, redis = KafkaBroker(), RedisServer()
    pids: dict[str, int] = {"demo": os.getpid()}
    state_file = run_dir / "demo.json"
    progress_file = run_dir / "generator.json"
    progress_file.unlink(missing_ok=True)
    first = last = None
    history_sent = None
    code = 0

    def record(**more) -> None:
        state_file.write_text(json.dumps({"pids": pids, **more}, indent=2))

    try:
        broker.start(run_dir / "kafka")
        pids["kafka"] = broker.pid
        redis.start(run_dir / "redis")
        pids["redis"] = redis.pid
        web_port = free_port()
        env = worker_environment(broker.bootstrap, redis.url, web_port, {
            "KPI_STATE_DIR": str(run_dir / "state"),
            # a clean run has nothing to restore next time: stopping need not save engines
            "KPI_SNAPSHOT_ON_STOP": "true" if keep else "false",
        })
        processes["worker"] = worker = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"], env=env, stdout=open(run_dir / "worker.log", mode),
            stderr=subprocess.STDOUT, start_new_session=True)
        pids["worker"] = worker.pid
        record(bootstrap=broker.bootstrap, redis_url=redis.url, web_port=web_port)
        wait_http(f"http://127.0.0.1:{web_port}/health", 120, alive=lambda: worker.poll() is None)
        sent_history = 0 if keep else history_events
        command = [sys.executable, "-m", "stream", "generate", "--live", "--kafka", broker.bootstrap,
                   "--rate", str(rate), "--history-days", str(history_days), "--history-events", str(sent_history),
                   "--progress", str(progress_file)]
        if events:
            command += ["--events", str(events)]
        processes["generator"] = generator = subprocess.Popen(
            command, stdout=open(run_dir / "generator.log", mode), stderr=subprocess.STDOUT, start_new_session=True)
        pids["generator"] = generator.pid
        record(bootstrap=broker.bootstrap, redis_url=redis.url, web_port=web_port)
        print(banner(run_dir, web_port, broker.bootstrap, redis.port, history_days, sent_history, rate,
                     status_interval, {k: v for k, v in pids.items() if k != "demo"}), flush=True)
        deadline = None if duration is None else time.monotonic() + duration
        generator_reported = False
        while deadline is None or time.monotonic() < deadline:
            wait = status_interval if deadline is None else min(status_interval, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            if worker.poll() is not None:
                print(f"the worker exited with {worker.returncode}; see {run_dir / 'worker.log'}", flush=True)
                code = 1
                break
            if generator.poll() is not None and not generator_reported:
                generator_reported = True
                how = "finished" if generator.returncode == 0 else f"failed ({generator.returncode})"
                print(f"the generator {how}; see {run_dir / 'generator.log'}", flush=True)
            progress = read_progress(progress_file)
            if history_sent is None and progress.get("history") is not None:
                history_sent = int(progress["history"])
            snap = snapshot(progress, read_metrics(web_port), time.time())
            print(status_line(snap, last, started), flush=True)
            first = first or snap
            last = snap
    except DemoStopped as stopped:
        print(f"\n{stopped}: stopping everything this demo started ...", flush=True)
    except Exception as error:  # noqa: BLE001 - one line, then the same clean-up
        print(f"kpi-stream demo failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}",
              file=sys.stderr, flush=True)
        code = 1
    finally:
        for sig in previous_handlers:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        try:
            if "worker" in processes and processes["worker"].poll() is None and last is not None:
                web = json.loads(state_file.read_text()).get("web_port") if state_file.exists() else None
                final = snapshot(read_progress(progress_file), read_metrics(web), time.time()) if web else None
                if final is not None and final.worker_answered:
                    last = final
            for name in ("generator", "worker"):
                if name in processes:
                    _stop_process(processes[name])
            redis.stop()
            broker.stop()
            print(summary(first, last, history_sent, started, run_dir), flush=True)
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
    return code
