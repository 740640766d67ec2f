"""Worker memory and restart time: in-memory table store vs on-disk (RocksDB), each restarted
from engine snapshots and from facts alone.

    .venv/bin/python bench/state_store.py --events 200000
    .venv/bin/python bench/state_store.py --events 1200000 --outlets 1000000   # ~950k tracked outlets

For each store, from a fresh consumer group on the same input topics: the worker consumes all
N events (untimed; a static group member, as in the manifests; background snapshots every --snapshot-interval seconds meanwhile), then its
resident memory (VmRSS) is read. After its next background snapshot (the forked writer's copied
pages are sampled meanwhile) it is killed (SIGKILL), and three restarts are timed to /ready
(state recovered: faust's table recovery, then the engines restored from snapshots plus the facts
written since, or rebuilt from every fact):
1. after the kill: from the background snapshots; then stopped cleanly (SIGTERM), saving;
2. after that clean stop: from its snapshots; stopped without saving (no snapshot either way);
3. from facts alone, every engine rebuilt from every stored fact (a partition no snapshot covers).
With `memory://` every stored fact is held in memory and the whole changelog is read at each
start; with `rocksdb://` the facts live on disk and faust reads only the changelog written since
the last acknowledged write it recorded, after a kill too (stream/kafka/local_tables.py).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from harness import (  # first: it puts the repository on sys.path
    as_of_text, bench_config, bench_worker_env, broker_and_redis, command, input_messages, is_ready, load_topics,
    machine, rss_bytes, scrape,
)
from stream.devtools.localstack import free_port
from tests.e2e.harness import WorkerProcess, counter_total, unique_names, wait_until


def rss_mib(worker: WorkerProcess) -> float:
    return rss_bytes(worker.process.pid) / 2**20


def consumed_all(worker: WorkerProcess, total: int) -> bool:
    text = scrape(worker)
    return text is not None and counter_total(text, "kpi_stream_events_consumed_total") >= total


def measure(store: str, bootstrap: str, redis_url: str, prefix: str, total: int, as_of: str, workdir: Path,
            interval: float) -> dict:
    app_id = unique_names()[1]
    env = bench_worker_env(bootstrap, redis_url, prefix, app_id, workdir / f"state-{app_id}", as_of,
                           KPI_STORE=store, KPI_LOG_LEVEL="INFO", KPI_SNAPSHOT_INTERVAL=str(interval),
                           KPI_GROUP_INSTANCE_ID=f"{app_id}-0")
    # a static member, as in the manifests: back under the same id (and web address), it gets its
    # partitions at once instead of after the killed member's session timeout
    web_port = free_port()
    worker = WorkerProcess(env, workdir / f"{app_id}-first.log", web_port=web_port).start()
    try:
        wait_until(lambda: consumed_all(worker, total), timeout=3600, interval=1, what=f"{store}: all {total} events consumed")
        time.sleep(5)  # the last fact batches and publication round
        after_ingest = rss_mib(worker)
        # the next background snapshot, then a kill: the restart finds it and the facts since
        saves = background_saves(worker)
        copy_dirty = 0.0
        while background_saves(worker) == saves:
            copy_dirty = max(copy_dirty, children_private_dirty_mib(worker.process.pid))
            time.sleep(0.1)
        saved_in_background = log_line(worker, "in the background")
        worker.kill()
        restarts = {}
        # after the kill: background snapshots; then a clean stop's snapshots; then facts alone
        # (that run neither saves at its stop nor in the background)
        no_saves = {"KPI_SNAPSHOT_INTERVAL": "0", "KPI_SNAPSHOT_ON_STOP": "false"}
        for source, extra in (("kill", {}), ("stop", no_saves), ("facts", no_saves)):
            worker = WorkerProcess(dict(env, **extra), workdir / f"{app_id}-restart-{source}.log",
                                   web_port=web_port).start()
            started = time.perf_counter()
            wait_until(lambda: is_ready(worker), timeout=1800, interval=0.2, what=f"{store}: ready after restart")
            restarts[source] = {"seconds": time.perf_counter() - started, "rss": rss_mib(worker),
                                "rebuild": log_line(worker, "rebuilt outlet")}
            if source == "kill":
                restarts[source]["kept"] = "local table state kept" in worker.log_path.read_text()
            worker.stop(timeout=300)
            if source == "kill":
                saved_at_stop = log_line(worker, "saved ")
        return {"rss_ingest": after_ingest, "background": saved_in_background, "copy_dirty": copy_dirty,
                "saved": saved_at_stop, "restarts": restarts}
    finally:
        worker.stop()


def background_saves(worker: WorkerProcess) -> float:
    text = scrape(worker)
    return counter_total(text, "kpi_stream_background_snapshots_total", outcome="saved") if text is not None else -1


def children_private_dirty_mib(pid: int) -> float:
    """Memory the forked snapshot writer has copied so far (its Private_Dirty pages)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            try:
                for line in Path(f"/proc/{child}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Private_Dirty:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                pass
    return total


def log_line(worker: WorkerProcess, marker: str) -> str:
    lines = [line for line in worker.log_path.read_text().splitlines() if marker in line]
    return re.split(r"stream\.[\w.]+: ", lines[-1])[-1] if lines else "?"  # the message after the logger's name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--snapshot-interval", type=float, default=20.0,
                        help="KPI_SNAPSHOT_INTERVAL of the ingesting worker (seconds)")
    parser.add_argument("--stores", default="memory://,rocksdb://", help="comma-separated table stores to measure")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (broker data, logs)")
    args = parser.parse_args()
    with broker_and_redis("kpi-bench-store-", keep=args.keep) as (workdir, broker, redis):
        config = bench_config(args.events, args.outlets)
        messages = input_messages(config)
        prefix, app_id = unique_names()
        load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
        results = {store: measure(store, broker.bootstrap, redis.url, prefix, len(messages), as_of_text(config), workdir,
                                  args.snapshot_interval)
                   for store in args.stores.split(",")}
        print(f"command: {command()}")
        print(f"machine: {machine()}")
        print(f"events: {len(messages)}, outlets: {args.outlets}")
        for store, r in results.items():
            print(f"{store:11s} RSS after ingest {r['rss_ingest']:7.1f} MiB; the writer's copied pages at most "
                  f"{r['copy_dirty']:.1f} MiB; background: {r['background']}; stop: {r['saved']}")
            for source, restart in r["restarts"].items():
                what = {"kill": "kill, from background snapshots", "stop": "clean stop, from its snapshots",
                        "facts": "stop, from facts alone"}[source]
                kept = f" local tables kept: {restart['kept']};" if "kept" in restart else ""
                print(f"  restart after a {what:32s} to /ready {restart['seconds']:7.2f} s, RSS then "
                      f"{restart['rss']:7.1f} MiB;{kept} ({restart['rebuild']})")
        memory, disk = results.get("memory://"), results.get("rocksdb://")
        if memory and disk:
            print(f"rocksdb/memory: RSS after ingest {disk['rss_ingest'] / memory['rss_ingest']:.2f}; restart time " + ", ".join(
                f"{source} {disk['restarts'][source]['seconds'] / memory['restarts'][source]['seconds']:.2f}"
                for source in ("kill", "stop", "facts")))
        for store, r in results.items():
            facts = r["restarts"]["facts"]["seconds"]
            print(f"{store}: " + "; ".join(
                f"after a {source}: {r['restarts'][source]['seconds'] / facts:.2f} of the rebuild from facts, "
                f"<= 10 s {'met' if r['restarts'][source]['seconds'] <= 10 else 'NOT met'}" for source in ("kill", "stop")))
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
