"""The worker against the plain-Faust hopping-window baseline, on the same generated input (issue 7).

    .venv/bin/python bench/baseline.py --events 200000 --baseline-events 20000

1. Starts a local broker and Redis, generates N events (bench/throughput.py's traffic: seed 7,
   20,000 outlets, 3 % late, no duplicates or junk) and loads them (untimed).
2. Times the baseline (bench/baselines/hopping_active_accounts.py: one Faust worker computing
   only global active_accounts 30d with a 30 d / 1 d hopping table of distinct-outlet dicts) from
   process start to its last consumed message, and reads its value at the pinned as_of.
3. Times the real worker (harness.worker_throughput: every KPI, every scope) on the full input.
4. Prints both rates, worker/baseline (target >= 20x), the baseline's value against the oracle's
   `active_accounts|30d|global|all` on the same input at the same as_of, and the worker's Redis
   values against the oracle's (every KPI; the worker is kept running, untimed, until they are
   equal or --settle-timeout passes).

The baseline rewrites (and writes to its changelog) each whole dict of distinct outlets for each
of the 30 windows an order falls in, so it slows down as the windows fill; on the full input its
changelog would be hundreds of GB. `--baseline-events K` (K < N) runs it on the LAST K generated
messages instead (loaded into topics of their own), and its value is then checked against the
oracle on those same K messages at the same as_of. The last, not the first: the first ~10 % of
the generated stream is outlet onboardings (no orders, the cheap path for the baseline), and the
pinned as_of stays the generator's "now". Its rate on K messages is an upper bound for its rate on
N: windows hold fewer distinct outlets.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from harness import (  # first: it puts the repository on sys.path
    as_of_text, bench_config, broker_and_redis, command, input_messages, load_topics, machine, worker_throughput,
)
from stream.core.timeparse import parse_rfc3339_us
from tests.e2e.harness import redis_records, unique_names

sys.path.insert(0, str(Path(__file__).resolve().parent / "baselines"))
import hopping_active_accounts  # noqa: E402

ACTIVE_KEY = "active_accounts|30d|global|all"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--outlets", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=None,
                        help="run the baseline on the last K generated messages only (default: all)")
    parser.add_argument("--skip-worker", action="store_true", help="time only the baseline")
    parser.add_argument("--settle-timeout", type=float, default=300.0,
                        help="seconds to wait (untimed) for the worker's Redis values to equal the oracle's")
    parser.add_argument("--keep", action="store_true", help="keep the run directory (broker data, logs)")
    parser.add_argument("--no-check", action="store_true", help="skip the oracle (and the worker's check)")
    args = parser.parse_args()
    from tests.kpi_compare import kpi_differences
    from tests.oracle import OracleSettings, oracle_kpis

    config = bench_config(args.events, args.outlets)
    messages = input_messages(config)
    as_of = as_of_text(config)
    as_of_us = parse_rfc3339_us(as_of)
    total = len(messages)
    k = total if args.baseline_events is None else min(args.baseline_events, total)
    base_messages = messages if k == total else messages[total - k:]
    if not any(m.topic == "sales.orders" for m in base_messages):
        parser.error(f"the last {k} of the {total} messages hold no order: nothing for the baseline to count "
                     "(raise --baseline-events or --events)")
    with broker_and_redis("kpi-baseline-", keep=args.keep) as (workdir, broker, redis):
        prefix, app_id = unique_names()
        load_topics(broker.bootstrap, messages, prefix, app_id)  # untimed
        if k == total:
            base_prefix = prefix
        else:
            base_prefix, base_app = unique_names()
            load_topics(broker.bootstrap, base_messages, base_prefix, base_app)  # untimed
        load_before = os.getloadavg()[0]
        base = hopping_active_accounts.run(broker.bootstrap, base_prefix, k, as_of_us, workdir)

        expected = base_expected = None
        oracle_note = worker_note = "not checked (--no-check)"
        if not args.no_check:  # untimed, before the worker so that its output can be waited for
            started = time.perf_counter()
            expected = oracle_kpis([m.value for m in messages], as_of, OracleSettings())
            if k == total:
                base_expected = expected
            else:  # only orders change active_accounts: the oracle on the sample's orders is the same
                base_expected = oracle_kpis([m.value for m in base_messages if m.topic == "sales.orders"],
                                            as_of, OracleSettings())
            oracle_seconds = time.perf_counter() - started
            truth = base_expected[ACTIVE_KEY]["value"]
            verdict = "EQUAL" if base.value == truth else f"NOT EQUAL (off by {base.value - truth:+d})"
            oracle_note = f"baseline {base.value} vs oracle {truth}: {verdict}  (oracle {oracle_seconds:.0f} s)"

        worker_rate = worker_rate_from_first = float("nan")
        if not args.skip_worker:
            import redis as redis_lib

            client = redis_lib.Redis.from_url(redis.url)
            settled_at: list[float] = []

            def settled() -> bool:
                if not kpi_differences(redis_records(client, prefix), expected, limit=1):
                    settled_at.append(time.perf_counter())
                    return True
                return False
            worker_started = time.perf_counter()
            worker_rate_from_first, worker_rate = worker_throughput(
                broker.bootstrap, redis.url, prefix, app_id, total, as_of, workdir, 1,
                settle=settled if expected is not None else None, settle_timeout=args.settle_timeout)
            if expected is not None:
                actual = redis_records(client, prefix)
                problems = kpi_differences(actual, expected, limit=10)
                worker_value = actual.get(ACTIVE_KEY, {}).get("value")
                when = (f"{settled_at[0] - worker_started:.0f} s after worker start" if settled_at else
                        f"still different {args.settle_timeout:.0f} s after the last event was consumed")
                worker_note = (f"{len(expected)} oracle keys, {len(actual)} in Redis: "
                               + ("every KPI EQUAL to the oracle" if not problems else
                                  f"{len(problems)}+ DIFFERENCES: " + "; ".join(problems[:5]))
                               + f" ({when}); worker {ACTIVE_KEY} = {worker_value} (oracle on all {total}: "
                               f"{expected[ACTIVE_KEY]['value']})")
        load_after = os.getloadavg()[0]

        sample = "all messages" if k == total else f"the LAST {k} of the {total} messages (bounded sample)"
        print(f"command: {command()}")
        print(f"machine: {machine()}; load average (1 min) {load_before:.1f} before, {load_after:.1f} after")
        print(f"events: {total}; as_of (pinned): {as_of}")
        print(f"baseline input: {sample}; {base.orders} orders applied")
        print(f"a. plain-Faust hopping baseline (global active_accounts 30d only): {base.rate_from_start:10.1f} events/s"
              f"   (from first message: {base.rate_from_first:.1f} events/s; changelog flush after the last"
              f" message: {base.flush_seconds:.1f} s)")
        print(f"b. kpi-stream worker x1 (every KPI, every scope):                  {worker_rate:10.1f} events/s"
              f"   (from first message: {worker_rate_from_first:.1f} events/s)")
        print(f"b/a = {worker_rate / base.rate_from_start:.1f}x from process start, "
              f"{worker_rate_from_first / base.rate_from_first:.1f}x from the first message   (target >= 20x)")
        print(f"baseline value at as_of (window [floor_day(as_of)-29d, +30d), the earliest containing as_of): "
              f"{oracle_note}")
        for description, value in base.values.items():
            print(f"    baseline window {description}: {value}")
        print(f"worker against the oracle (Redis, after the run): {worker_note}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
