"""Plain-Faust baseline for issue 7: global active_accounts over 30 days, the way Faust's docs lead you.

A Faust agent over the same five input topics the worker reads (raw bytes, decoded with orjson;
every event that is not an `order.placed` is skipped after decoding) and a hopping windowed table

    app.Table("active-outlets", default=dict).hopping(size=30 days, step=1 day, expires=...)

holding, per window, a dict of the distinct outlet_ids that ordered in it (`table["global"] |=
{outlet_id: True}`): the naive distinct count. Each order rewrites the whole dict of each of the
30 windows it falls in, and each rewrite is a changelog message carrying the whole dict.

Event time: the windows are relative to the order's `occurred_at`. Faust's `relative_to_field`
needs a `faust.Record` value; the topics are read as raw bytes (the worker's way, and cheaper
than a Record, so this favours the baseline), so the table uses the equivalent documented form
`relative_to(callable)`: a handler returning the decoded order's occurred_at as Unix seconds.

Reading the value at a pinned as_of (faust-notes.md: `.now()` uses the wall clock, `.current()`
and `.delta()` use the Kafka timestamp and ignore relative_to (#428), `.value()` reads the newest
window containing the instant (#195)): the value reported is that of the window containing as_of
that reaches furthest back, `relative_to(as_of - 29 d)[key].value()` (what `.delta(29 days)`
would read from as_of if it honoured relative_to): [floor_day(as_of) - 29 d, floor_day(as_of) + 1 d). The other windows a Faust user might
read are printed too:
  last window ending by as_of  -> [floor_day(as_of) - 30 d, floor_day(as_of)), `relative_to(as_of - 30 d)`
  `.value()` at as_of          -> newest window containing as_of, [floor_day(as_of), + 30 d)
  `.now()`                     -> the partition's latest window end (meaningless here)
None is the spec's window: that one is in 60 s slots, (S - 43200, S] with S = floor(as_of / 60 s),
i.e. it ends with as_of's own minute (the generator puts orders at exactly its "now") and starts
30 d before, not on a day boundary. The reported window misses (as_of - 30 d, floor_day(as_of) - 29 d);
the last window before as_of misses as_of's minute. One Faust worker with the memory store holds
every partition's "global" entry in one dict, so no group_by repartition is needed (several
workers would need one: more cost for the baseline).

Expiry: Faust evicts windows by the wall clock. With a pinned, historic as_of the windows read at
as_of would be evicted, so the runner passes expires = 30 d + (wall clock - as_of).

Run by bench/baseline.py, which calls `run()`; run directly as a Faust app by `run()` itself
(`python hopping_active_accounts.py worker`, settings in BENCH_* environment variables).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DAY_S = 86_400.0
SIZE_S = 30 * DAY_S
STEP_S = DAY_S
KEY = "global"


@dataclass
class BaselineResult:
    events: int  # messages consumed (all topics)
    orders: int  # order.placed events applied to the table
    rate_from_start: float  # events / (last message - process start), like the worker's figure
    rate_from_first: float  # events / (last message - first message)
    flush_seconds: float  # time to flush the changelog producer after the last message
    values: dict[str, int]  # window description -> distinct outlets
    value: int  # the reported value: the earliest window containing as_of


def run(bootstrap: str, prefix: str, total: int, as_of_us: int, workdir: Path,
        partitions: int = 4, timeout: float = 7200.0) -> BaselineResult:
    """Run the baseline as a Faust worker subprocess until it has consumed `total` messages."""
    expires = SIZE_S + max(0.0, time.time() - as_of_us / 1e6)
    app_id = f"baseline-hopping-{time.time_ns()}"
    env = dict(os.environ, BENCH_BOOTSTRAP=bootstrap, BENCH_PREFIX=prefix, BENCH_TOTAL=str(total),
               BENCH_APP=app_id, BENCH_AS_OF_US=str(as_of_us), BENCH_EXPIRES_S=str(expires),
               BENCH_PARTITIONS=str(partitions), BENCH_STARTED=repr(time.time()))
    log = workdir / "baseline.log"
    with open(log, "wb") as out:
        result = subprocess.run([sys.executable, str(Path(__file__).resolve()), "worker", "-l", "warn",
                                 "--without-web"], stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                                cwd=workdir, env=env)
    text = log.read_text(errors="replace")
    for line in text.splitlines():  # faust may route stdout to its log
        if "BASELINE_RESULT " in line:
            return BaselineResult(**json.loads(line.split("BASELINE_RESULT ", 1)[1]))
    raise RuntimeError(f"baseline produced no result (exit {result.returncode}):\n{text[-4000:]}")


def _worker_main() -> None:
    from datetime import datetime, timedelta

    import faust
    import orjson

    env = os.environ
    started = float(env["BENCH_STARTED"])
    bootstrap, prefix, total, app_id = env["BENCH_BOOTSTRAP"], env["BENCH_PREFIX"], int(env["BENCH_TOTAL"]), env["BENCH_APP"]
    as_of_s = int(env["BENCH_AS_OF_US"]) / 1e6
    partitions = int(env["BENCH_PARTITIONS"])
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", store="memory://", key_serializer="raw",
                    value_serializer="raw", consumer_auto_offset_reset="earliest", web_enabled=False,
                    broker_max_poll_records=500, topic_partitions=partitions, env_prefix="KPI_FAUST_")
    topic = app.topic(*[prefix + t for t in ("sales.outlets", "sales.orders", "sales.visits", "sales.leads",
                                              "sales.activities")])
    now = {"t": 0.0}  # occurred_at of the order being applied (Unix seconds)

    def order_time(event=None) -> float:  # the RelativeHandler: event time from the decoded value
        return now["t"]

    active = app.Table("active-outlets", default=dict, partitions=partitions).hopping(
        size=timedelta(days=30), step=timedelta(days=1), expires=float(env["BENCH_EXPIRES_S"]),
    ).relative_to(order_time)

    state = {"n": 0, "orders": 0, "t0": None}

    @app.agent(topic)
    async def hopping_active_accounts(stream):
        async for value in stream:
            if state["t0"] is None:
                state["t0"] = time.perf_counter()
            state["n"] += 1
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = None
            if isinstance(doc, dict) and doc.get("type") == "order.placed":
                try:
                    now["t"] = datetime.fromisoformat(doc["occurred_at"]).timestamp()
                    outlet = doc["outlet_id"]
                except (KeyError, TypeError, ValueError):
                    outlet = None
                if isinstance(outlet, str):
                    active[KEY] |= {outlet: True}
                    state["orders"] += 1
            if state["n"] >= total:
                done_wall, done = time.time(), time.perf_counter()
                await app.producer.flush()
                flushed = time.perf_counter()
                values = {
                    "[floor_day(as_of)-29d, +30d): relative_to(as_of-29d).value(), earliest containing as_of"
                    " (reported)": len(active.relative_to(as_of_s - SIZE_S + STEP_S)[KEY].value()),
                    "[floor_day(as_of)-30d, floor_day(as_of)): relative_to(as_of-30d).value(), last one before as_of":
                        len(active.relative_to(as_of_s - SIZE_S)[KEY].value()),
                    "[floor_day(as_of), +30d): relative_to(as_of).value(), newest containing as_of":
                        len(active.relative_to(as_of_s)[KEY].value()),
                    ".now() (partition's latest window end)": len(active[KEY].now()),
                }
                result = BaselineResult(
                    events=state["n"], orders=state["orders"],
                    rate_from_start=state["n"] / (done_wall - started),
                    rate_from_first=state["n"] / (done - state["t0"]),
                    flush_seconds=flushed - done, values=values,
                    value=next(v for d, v in values.items() if d.endswith("(reported)")),
                )
                print("BASELINE_RESULT " + json.dumps(result.__dict__), flush=True)
                os._exit(0)

    app.main()


if __name__ == "__main__":
    _worker_main()
