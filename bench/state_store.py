"""Worker memory and restart time with the in-memory table store vs the on-disk one (RocksDB).

    .venv/bin/python bench/state_store.py --events 200000

For each store, from a fresh consumer group on the same input topics: the worker consumes all
N events (untimed), then its resident memory (VmRSS) is read; it is stopped cleanly (SIGTERM)
and started again, and the restart is timed to /ready (state recovered: faust's table recovery
plus the engine rebuild from the stored facts), with VmRSS read again after it. With
`memory://` every stored fact is held in memory and the whole changelog is read at each start;
with `rocksdb://` the facts live on disk and, after a clean stop, faust reads only the
changelog written since (stream/localstate.py). Both rebuild the engine from every stored fact.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from throughput import INPUTS, as_of_text, bench_config, broker_and_redis, load_topics, machine  # noqa: E402
from stream import generator  # noqa: E402
from tests.e2e.harness import WorkerProcess, counter_total, unique_names, wait_until, worker_env  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _alive(worker: WorkerProcess) -> None:
    if not worker.alive():
        raise RuntimeError(f"the worker stopped:\n{worker.log_tail()}")


def consumed_all(worker: WorkerProcess, total: int) -> bool:
    _alive(worker)
    try:
        status, body = worker.get("/metrics", timeout=10)
    except OSError:
        return False
    return status == 200 and counter_total(body.decode(), "kpi_stream_events_consumed_total") >= total


def ready(worker: WorkerProcess) -> bool:
    _alive(worker)
    try:
        return worker.get("/ready", timeout=5)[0] == 200
    except OSError:
        return False


def measure(store: str, bootstrap: str, redis_url: str, prefix: str, total: int, as_of: str, workdir: Path) -> dict:
    app_id = unique_names()[1]
    env = worker_env(bootstrap, redis_url, prefix, app_id, workdir / f"state-{app_id}", KPI_CLOCK=as_of,
                     KPI_STORE=store, KPI_PARTITIONS=os.environ.get("BENCH_PARTITIONS", "4"), KPI_LOG_LEVEL="INFO")
    worker = WorkerProcess(env, workdir / f"{app_id}-first.log").start()
    try:
        wait_until(lambda: consumed_all(worker, total), timeout=1800, interval=1, what=f"{store}: all {total} events consumed")
        time.sleep(5)  # the last fact batches and publication round
        after_ingest = rss_mib(worker.process.pid)
        worker.stop()
        worker = WorkerProcess(env, workdir / f"{app_id}-restart.log").start()
        started = time.perf_counter()
        wait_until(lambda: ready(worker), timeout=600, interval=0.2, what=f"{store}: ready after restart")
        restart = time.perf_counter() - started
        after_restart = rss_mib(worker.process.pid)
        rebuilt = [line for line in worker.log_path.read_text().splitlines() if "rebuilt outlet" in line]
        return {"rss_ingest": after_ingest, "restart_s": restart, "rss_restart": after_restart,
                "rebuild": rebuilt[-1].split("stream.worker: ")[-1] if rebuilt else "?"}
    finally:
        worker.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    args = parser.parse_args()
    with broker_and_redis("kpi-bench-store-") as (workdir, broker, redis):
        config = bench_config(args.events, args.outlets)
        messages = [m for m in generator.generate(config) if m.topic in INPUTS]
        prefix, app_id = unique_names()
        load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
        results = {store: measure(store, broker.bootstrap, redis.url, prefix, len(messages), as_of_text(config), workdir)
                   for store in ("memory://", "rocksdb://")}
        print(f"command: {' '.join(sys.argv)}")
        print(f"machine: {machine()}")
        print(f"events: {len(messages)}, outlets: {args.outlets}")
        for store, r in results.items():
            print(f"{store:11s} RSS after ingest {r['rss_ingest']:7.1f} MiB; clean restart to /ready {r['restart_s']:6.2f} s, "
                  f"RSS then {r['rss_restart']:7.1f} MiB ({r['rebuild']})")
        memory, disk = results["memory://"], results["rocksdb://"]
        print(f"rocksdb/memory: RSS after ingest {disk['rss_ingest'] / memory['rss_ingest']:.2f}, "
              f"after restart {disk['rss_restart'] / memory['rss_restart']:.2f}, restart time {disk['restart_s'] / memory['restart_s']:.2f}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
