"""Running real workers against the real local broker and Redis, and reading every output."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import orjson
from prometheus_client.parser import text_string_to_metric_families

from stream.core.catalogue import kpi_key
from stream.devtools.localstack import free_port

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One `kpi-stream worker` subprocess with its own web port and log file."""

    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # interpreter options before `-m stream worker`, e.g. ["-m", "cProfile", "-o", "out.prof"]
    python_args: list[str] = field(default_factory=list)
    # sent as `Authorization: Bearer` by get() (the worker's KPI_API_TOKENS)
    token: str | None = None

    def start(self) -> "WorkerProcess":
        env = dict(self.env, KPI_WEB_PORT=str(self.web_port), KPI_WEB_HOST="127.0.0.1")
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, *self.python_args, "-m", "stream", "worker"], env=env, cwd=REPO,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.web_port}{path}"

    def get(self, path: str, timeout: float = 5.0, token: str | None = "default") -> tuple[int, bytes]:
        """GET a page: with the worker's token (`token` unset), another one, or none (None)."""
        token = self.token if token == "default" else token
        request = urllib.request.Request(self.url(path), headers={"Authorization": f"Bearer {token}"} if token else {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()
        except OSError:  # not listening yet (or any more)
            return 0, b""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if not self.alive():
            return
        os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def kpi_all(worker: WorkerProcess, query: str = "", limit: int = 1000) -> list[dict]:
    """Every value /kpi holds, page after page (`query`: filters, e.g. "scope=global")."""
    values: list[dict] = []
    cursor = None
    while True:
        path = f"/kpi?limit={limit}" + (f"&{query}" if query else "") + (f"&cursor={cursor}" if cursor else "")
        status, body = worker.get(path)
        assert status == 200, (path, body[:300], worker.log_tail())
        page = orjson.loads(body)
        values += page["values"]
        cursor = page["next_cursor"]
        if cursor is None:
            return values


def unique_names() -> tuple[str, str]:
    """A topic prefix and app id of our own, so runs on one broker never see each other."""
    tag = uuid.uuid4().hex[:8]
    return f"t{tag}.", f"kpi-test-{tag}"


def worker_env(bootstrap: str, redis_url: str, prefix: str, app_id: str, state_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "REDIS_URL": redis_url, "KPI_TOPIC_PREFIX": prefix,
        "KPI_APP_ID": app_id, "KPI_PARTITIONS": "4", "KPI_PUBLISH_INTERVAL": "0.5",
        "KPI_STATE_DIR": str(state_dir), "KPI_LOG_LEVEL": "INFO",
    })
    env.update(extra)
    return env


async def produce(bootstrap: str, records: Iterable[tuple[str, bytes | None, bytes]]) -> int:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=262144)
    await producer.start()
    count = 0
    try:
        futures = []
        for topic, key, value in records:
            futures.append(await producer.send(topic, key=key, value=value))
            count += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return count


async def latest_updates(bootstrap: str, topic: str, every: list | None = None) -> dict[str, dict]:
    """The compacted view of kpi.updates: the last message per key, with its headers. `every`,
    when given, receives every message's value in topic order."""
    from stream.devtools.tail import read_topic

    latest: dict[str, dict] = {}
    for row in await read_topic(bootstrap, topic, timeout_s=3.0, follow=False):
        latest[row["key"]] = {**row["value"], "_headers": row["headers"]}
        if every is not None:
            every.append(row["value"])
    return latest


def kpi_update_schema():
    """A validator of schemas/kpi_update.v1.json, the schema consumers are promised."""
    from jsonschema import Draft202012Validator

    return Draft202012Validator(orjson.loads((Path(__file__).resolve().parents[2] / "schemas" / "kpi_update.v1.json")
                                             .read_bytes()))


def redis_records(client, prefix: str) -> dict[str, dict]:
    """The latest values a run left in Redis, in the oracle's record form."""
    raw = client.hgetall(f"{prefix}kpi:latest")
    return as_records({k.decode(): orjson.loads(v) for k, v in raw.items()})


def as_records(messages: dict[str, dict]) -> dict[str, dict]:
    return {key: {"value": m["value"], "numerator": m["numerator"], "denominator": m["denominator"]}
            for key, m in messages.items()}


def gauge_values(metrics_text: str) -> dict[str, dict]:
    """kpi_* gauges -> spec key -> {"value"}; window label 'none' -> no window."""
    out: dict[str, dict] = {}
    for family in text_string_to_metric_families(metrics_text):
        if not family.name.startswith("kpi_") or family.name.startswith("kpi_stream_"):
            continue
        kpi = family.name[len("kpi_"):]
        for sample in family.samples:
            labels = sample.labels
            window = None if labels["window"] == "none" else labels["window"]
            key = kpi_key(kpi, window, labels["scope"], labels["scope_id"], labels.get("horizon") or labels.get("kind"))
            out[key] = {"value": sample.value}
    return out


def wait_until(check: Callable[[], object], timeout: float, interval: float = 1.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()  # True, or a list of problems (empty: satisfied)
        if last is True or (isinstance(last, list) and not last):
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {str(last)[:2000]}")


def counter_total(metrics_text: str, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def metric_total(worker: WorkerProcess, name: str, **labels: str) -> float:
    """A metric of the worker's /metrics summed over the series with these labels."""
    status, body = worker.get("/metrics")
    assert status == 200, worker.log_tail()
    return counter_total(body.decode(), name, **labels)


@dataclass
class OracleCheck:
    """Events produced so far in one test, and Redis compared with the oracle over all of them."""

    bootstrap: str
    redis_client: object
    prefix: str
    as_of: str
    produced: list = field(default_factory=list)

    def produce(self, messages: list) -> None:
        self.produced.extend(messages)
        asyncio.run(produce(self.bootstrap, ((self.prefix + m.topic, m.key, m.value) for m in messages)))

    def wait_for_redis(self, *workers: WorkerProcess, timeout: float = 180) -> None:
        from tests.kpi_compare import kpi_differences
        from tests.oracle import OracleSettings, oracle_kpis

        expected = oracle_kpis([m.value for m in self.produced], self.as_of, OracleSettings())

        def redis_values():
            for worker in workers:
                assert worker.alive(), worker.log_tail()
            return kpi_differences(redis_records(self.redis_client, self.prefix), expected)

        wait_until(redis_values, timeout=timeout, interval=2,
                   what=f"values equal to the oracle over {len(self.produced)} events")


def loads(body: bytes):
    return orjson.loads(body)
