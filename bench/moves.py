"""What it costs to move an outlet (a new territory or rep) against what one order costs, by history.

    .venv/bin/python bench/moves.py

An outlet that changes territory, region, distributor, channel or assigned rep takes every
contribution it still makes out of its old cell and into the new one (stream/core/outlets.py
`OutletBook._move`). For each history length, builds outlets with that many days of orders and
visits (default: 150 orders and 100 visits each, evenly spread) in the engine, clock pinned, then
times in the same process, alternating, (a) an order for each outlet -- the reference: an ordinary
event on the same outlets -- and (b) a move of each outlet between two territories. Prints
microseconds per event and the ratio move / order. A territory realignment moves thousands of
outlets at once; each move stops the worker's loop for its duration.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from replay import machine  # noqa: E402
from stream.core.config import ClockSetting, KpiSettings  # noqa: E402
from stream.core.decode import decode_event  # noqa: E402
from stream.core.engine import KpiEngine  # noqa: E402
from stream.core.gcpause import cyclic_gc_paused  # noqa: E402
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us  # noqa: E402

DAY_US = 86_400_000_000
NOW_US = parse_rfc3339_us("2026-11-24T00:00:00Z")


class Engine:
    def __init__(self) -> None:
        self.settings = KpiSettings(clock=ClockSetting("pinned", NOW_US))
        self.engine = KpiEngine(self.settings, NOW_US)
        self.serial = 0

    def apply(self, doc: dict) -> None:
        self.serial += 1
        doc["event_id"] = f"e{self.serial}"
        self.engine.apply(decode_event(orjson.dumps(doc), NOW_US, self.settings))


def outlet_doc(outlet_id: str, t_us: int, territory: str, kind: str = "outlet.updated") -> dict:
    return {"type": kind, "occurred_at": format_rfc3339_us(t_us), "outlet_id": outlet_id, "region": "north",
            "territory": territory, "distributor_id": "D1", "channel": "gt", "rep_id": "rep-1"}


def build(engine: Engine, outlets: int, days: int, orders: int, visits: int) -> None:
    start = NOW_US - days * DAY_US
    for o in range(outlets):
        oid = f"O{o}"
        engine.apply(outlet_doc(oid, start - DAY_US, "T1", "outlet.onboarded"))
        for i in range(orders):
            engine.apply({"type": "order.placed", "occurred_at": format_rfc3339_us(start + i * (days * DAY_US // orders) + o),
                          "outlet_id": oid, "order_id": f"{oid}-o{i}", "rep_id": "rep-1", "amount": "12.50",
                          "currency": "USD", "lines": 2})
        for i in range(visits):
            engine.apply({"type": "visit.completed", "occurred_at": format_rfc3339_us(start + i * (days * DAY_US // visits) + 7),
                          "outlet_id": oid, "visit_id": f"{oid}-v{i}", "rep_id": "rep-1"})


def timed(engine: Engine, docs: list[dict]) -> float:
    """Seconds per event; decoding included in both (a)'s and (b)'s, as in the worker."""
    started = time.perf_counter()
    for doc in docs:
        engine.apply(doc)
    return (time.perf_counter() - started) / len(docs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", default="400,60", help="history lengths to measure, in days")
    parser.add_argument("--outlets", type=int, default=200)
    parser.add_argument("--orders", type=int, default=150)
    parser.add_argument("--visits", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    print(f"command: {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    with cyclic_gc_paused():
        for days in (int(d) for d in args.days.split(",")):
            engine = Engine()
            build(engine, args.outlets, days, args.orders, args.visits)
            order_s, move_s = [], []
            for r in range(args.rounds):
                t = NOW_US - DAY_US + r * 1_000_000
                order_s.append(timed(engine, [
                    {"type": "order.placed", "occurred_at": format_rfc3339_us(t), "outlet_id": f"O{o}",
                     "order_id": f"O{o}-r{r}", "rep_id": "rep-1", "amount": "3.00", "currency": "USD", "lines": 1}
                    for o in range(args.outlets)]))
                move_s.append(timed(engine, [outlet_doc(f"O{o}", t + 1, "T2" if r % 2 == 0 else "T1")
                                             for o in range(args.outlets)]))
            order_us, move_us = sorted(order_s)[len(order_s) // 2] * 1e6, sorted(move_s)[len(move_s) // 2] * 1e6
            print(f"{days:4d} days of history ({args.orders} orders, {args.visits} visits per outlet, {args.outlets} "
                  f"outlets, median of {args.rounds} rounds): a. order {order_us:7.1f} us   b. move {move_us:7.1f} us"
                  f"   b/a = {move_us / order_us:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
