"""`kpi-stream demo`: the local stack, a worker and the generator, all started here and stopped
by pid on exit (Ctrl-C, or after --duration seconds)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from stream.devtools.localstack import KafkaBroker, RedisServer, free_port

log = logging.getLogger(__name__)


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


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f}s")


def run_demo(run_dir: Path, duration: float | None, rate: float, events: int) -> int:
    run_dir.mkdir(parents=True, exist_ok=True)
    processes: list[subprocess.Popen] = []
    broker = KafkaBroker().start(run_dir / "kafka")
    redis = RedisServer().start(run_dir / "redis")
    try:
        web_port = free_port()
        env = worker_environment(broker.bootstrap, redis.url, web_port)
        worker_log = open(run_dir / "worker.log", "ab")
        processes.append(subprocess.Popen([sys.executable, "-m", "stream", "worker"], env=env,
                                          stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True))
        wait_http(f"http://127.0.0.1:{web_port}/health", 90)
        generator_log = open(run_dir / "generator.log", "ab")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "stream", "generate", "--kafka", broker.bootstrap, "--rate", str(rate),
             "--events", str(events)],
            stdout=generator_log, stderr=subprocess.STDOUT, start_new_session=True))
        print(f"""
kpi-stream demo is running (logs in {run_dir}/):
  metrics      curl http://127.0.0.1:{web_port}/metrics
  KPI values   curl 'http://127.0.0.1:{web_port}/kpi?kpi=active_accounts&scope=global'
  readiness    curl http://127.0.0.1:{web_port}/ready
  KPI topic    .venv/bin/python -m stream.devtools.tail --kafka {broker.bootstrap} kpi.updates
  dead letters .venv/bin/python -m stream.devtools.tail --kafka {broker.bootstrap} kpi.deadletter
  Kafka        {broker.bootstrap}    Redis {redis.url}
Ctrl-C stops everything this command started.
""", flush=True)
        deadline = None if duration is None else time.monotonic() + duration
        while deadline is None or time.monotonic() < deadline:
            if processes[0].poll() is not None:
                log.error("worker exited with %s; see %s", processes[0].returncode, run_dir / "worker.log")
                return 1
            time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
        redis.stop()
        broker.stop()
