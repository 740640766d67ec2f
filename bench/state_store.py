"""Worker memory and restart time: in-memory table store vs on-disk (RocksDB), each restarted
from engine snapshots and from facts alone.

    .venv/bin/python bench/state_store.py --events 200000
    .venv/bin/python bench/state_store.py --events 1200000 --outlets 1000000   # ~950k tracked outlets

For each store, from a fresh consumer group on the same input topics: the worker consumes all
N events (untimed), then its resident memory (VmRSS) is read and it is stopped cleanly (SIGTERM),
saving its engine snapshots (stream/snapshots.py). It is started again and the restart is timed
to /ready (state recovered: faust's table recovery, then the engines restored from the snapshots
plus the facts written since -- none here); that run is stopped without saving
(KPI_SNAPSHOT_ON_STOP=false), and the next start is timed again: every engine rebuilt from every
stored fact, as after a kill or on a rebalance. With `memory://` every stored fact is held in
memory and the whole changelog is read at each start; with `rocksdb://` the facts live on disk
and, after a clean stop, faust reads only the changelog written since (stream/localstate.py).
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
        wait_until(lambda: consumed_all(worker, total), timeout=3600, interval=1, what=f"{store}: all {total} events consumed")
        time.sleep(5)  # the last fact batches and publication round
        after_ingest = rss_mib(worker.process.pid)
        worker.stop(timeout=300)  # saves the snapshots
        saved = log_line(worker, "saved ")
        restarts = {}
        for source in ("snapshot", "facts"):
            # neither restart saves at its stop: the second one must find no snapshot
            worker = WorkerProcess(dict(env, KPI_SNAPSHOT_ON_STOP="false"), workdir / f"{app_id}-restart-{source}.log").start()
            started = time.perf_counter()
            wait_until(lambda: ready(worker), timeout=1800, interval=0.2, what=f"{store}: ready after restart")
            restarts[source] = {"seconds": time.perf_counter() - started, "rss": rss_mib(worker.process.pid),
                                "rebuild": log_line(worker, "rebuilt outlet")}
            worker.stop(timeout=300)
        return {"rss_ingest": after_ingest, "saved": saved, "restarts": restarts}
    finally:
        worker.stop()


def log_line(worker: WorkerProcess, marker: str) -> str:
    lines = [line for line in worker.log_path.read_text().splitlines() if marker in line]
    return lines[-1].split("stream.worker: ")[-1] if lines else "?"


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
            print(f"{store:11s} RSS after ingest {r['rss_ingest']:7.1f} MiB; stop: {r['saved']}")
            for source, restart in r["restarts"].items():
                print(f"  clean restart from {source:8s} to /ready {restart['seconds']:7.2f} s, RSS then "
                      f"{restart['rss']:7.1f} MiB ({restart['rebuild']})")
        memory, disk = results["memory://"], results["rocksdb://"]
        print(f"rocksdb/memory: RSS after ingest {disk['rss_ingest'] / memory['rss_ingest']:.2f}; restart time from "
              f"snapshots {disk['restarts']['snapshot']['seconds'] / memory['restarts']['snapshot']['seconds']:.2f}, "
              f"from facts {disk['restarts']['facts']['seconds'] / memory['restarts']['facts']['seconds']:.2f}")
        for store, r in results.items():
            snapshot, facts = r["restarts"]["snapshot"]["seconds"], r["restarts"]["facts"]["seconds"]
            print(f"{store}: restart from snapshots / from facts = {snapshot / facts:.2f}; "
                  f"restart <= 10 s: {'met' if snapshot <= 10 else 'NOT met'} from snapshots")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
