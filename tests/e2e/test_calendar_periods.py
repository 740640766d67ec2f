"""End to end, calendar periods and targets (spec 8, 9): a real broker, Redis and worker, traffic
around the local month end in Asia/Jakarta with late events into closed periods and targets
(re-set, removed, for a scope with no events); every output equals the oracle before local
midnight, and again after the clock moved past it -- `mtd` names December (December's targets),
`2026-11` keeps November's values, `lmtd` is November to date.

The clock is pinned, then advanced by restarting the worker pinned 20 minutes later (the state
comes back from its changelogs); and, in a running worker, advanced by the event clock
(KPI_CLOCK=event) when an event after midnight arrives, which moves the aliases live."""

from __future__ import annotations

import asyncio
import random
from urllib.parse import quote

import orjson
import pytest

from stream.core.calendar import is_designator
from stream.core.timeparse import parse_rfc3339_us
from tests.e2e.harness import (WorkerProcess, as_records, gauge_values, kpi_all, kpi_update_schema, latest_updates, produce,
                               redis_records, unique_names, wait_until, worker_env)
from tests.kpi_compare import kpi_differences, values_by_key
from tests.oracle import OracleSettings, oracle_kpis

pytestmark = pytest.mark.e2e

BEFORE_MIDNIGHT = "2026-11-30T16:50:00Z"  # 23:50 on 30 November in Jakarta (UTC+7)
AFTER_MIDNIGHT = "2026-11-30T17:10:00Z"  # 00:10 on 1 December
TOPICS = {"outlet": "sales.outlets", "order": "sales.orders", "visit": "sales.visits", "lead": "sales.leads",
          "activity": "sales.activities", "target": "sales.targets"}


def _local(text: str) -> str:
    return text + "+07:00"


def month_end_traffic(seed: int) -> tuple[list[tuple[str, bytes, bytes]], list[tuple[str, bytes, bytes]]]:
    """(before, after): events up to 23:45 on 30 November -- September to November, shuffled so
    October and early November arrive late -- and events of 1 December 00:00-00:09 plus one late
    November order, for after midnight."""
    rng = random.Random(seed)
    before: list[tuple[str, bytes, bytes]] = []
    after: list[tuple[str, bytes, bytes]] = []
    serial = iter(range(1, 10**6))

    def event(kind: str, key: str, doc: dict) -> tuple[str, bytes, bytes]:
        doc = {"event_id": f"e{next(serial)}", **doc}
        return TOPICS[kind], key.encode(), orjson.dumps(doc)

    outlets = [f"OUT-{n:02d}" for n in range(24)]
    for n, outlet in enumerate(outlets):
        before.append(event("outlet", outlet, {"type": "outlet.onboarded", "occurred_at": _local(
            f"2026-{9 + n % 3:02d}-{1 + n:02d}T09:00:00"), "outlet_id": outlet, "region": f"R{n % 2}",
            "territory": f"T{n % 3}", "distributor_id": f"D{n % 2}", "channel": "general_trade", "rep_id": f"rep-{n % 4}"}))
    days = ["2026-09-29", "2026-10-01", "2026-10-31", "2026-11-01", "2026-11-23", "2026-11-29", "2026-11-30"]
    for n in range(90):
        outlet = rng.choice(outlets)
        day = rng.choice(days)
        at = _local(f"{day}T{rng.choice(['00:05', '08:30', '13:15', '23:40'])}:00")
        visit_id = f"V{n}"
        rep = f"rep-{rng.randrange(4)}"
        before.append(event("visit", outlet, {"type": "visit.completed", "occurred_at": at, "outlet_id": outlet,
                                              "visit_id": visit_id, "rep_id": rep}))
        if rng.random() < 0.6:
            before.append(event("order", outlet, {"type": "order.placed", "occurred_at": at, "outlet_id": outlet,
                                                  "order_id": f"O{n}", "amount": f"{rng.randrange(100, 9000)}.{n % 100:02d}",
                                                  "currency": "USD", "lines": 1 + n % 4, "rep_id": rep,
                                                  "visit_id": visit_id}))
    for n in range(12):
        lead = f"L{n}"
        created = _local(f"{rng.choice(days[:5])}T10:00:00")
        before.append(event("lead", lead, {"type": "lead.created", "occurred_at": created, "lead_id": lead,
                                           "rep_id": f"rep-{n % 4}", "value": 1000 + 10 * n}))
        if n % 3 == 0:
            before.append(event("lead", lead, {"type": "lead.won", "occurred_at": _local("2026-11-30T11:00:00"),
                                               "lead_id": lead, "value": 1500 + n}))
    for n in range(30):
        before.append(event("activity", f"rep-{n % 4}", {"type": "activity.logged", "occurred_at": _local(
            f"{rng.choice(days)}T12:00:00"), "rep_id": f"rep-{n % 4}", "kind": ["call", "email", "meeting", "demo"][n % 4]}))
    # targets (spec 9): November's and December's, one re-set, one removed, one for a scope with no events
    for kpi, scope, scope_id, value, period in (("orders", "global", "all", 60, "2026-11"),
                                                ("sales_amount", "territory", "T0", "90000.00", "2026-11"),
                                                ("active_accounts", "region", "R1", 9, "2026-11"),
                                                ("visits", "rep", "rep-9", 5, "2026-11"),
                                                ("orders", "global", "all", 70, "2026-12"),
                                                ("activities", "rep", "rep-1", 4, "2026-12")):
        key = f"{kpi}|{period}|{scope}|{scope_id}" + ("|all" if kpi == "activities" else "")
        before.append(event("target", key, {"type": "target.set", "occurred_at": _local("2026-11-01T08:00:00"),
                                            "kpi": kpi, "period": period, "scope": scope, "scope_id": scope_id,
                                            "value": value}))
    before.append(event("target", "orders|2026-11|global|all", {
        "type": "target.set", "occurred_at": _local("2026-11-15T09:00:00"), "kpi": "orders", "period": "2026-11",
        "scope": "global", "scope_id": "all", "value": 55}))  # re-set mid-month
    before.append(event("target", "active_accounts|2026-11|region|R1", {
        "type": "target.set", "occurred_at": _local("2026-11-20T09:00:00"), "kpi": "active_accounts",
        "period": "2026-11", "scope": "region", "scope_id": "R1", "value": None}))  # removed
    rng.shuffle(before)  # arrival order: most of October and November arrive after later days
    before.append(before[3])  # a byte-identical repeat: a duplicate

    for n in range(10):
        outlet = outlets[n]
        at = _local(f"2026-12-01T00:0{n}:00")
        after.append(event("order", outlet, {"type": "order.placed", "occurred_at": at, "outlet_id": outlet,
                                             "order_id": f"D{n}", "amount": "250.00", "currency": "USD", "lines": 2}))
        after.append(event("visit", outlet, {"type": "visit.completed", "occurred_at": at, "outlet_id": outlet,
                                             "visit_id": f"DV{n}", "rep_id": "rep-1"}))
    after.append(event("order", outlets[20], {"type": "order.placed", "occurred_at": _local("2026-11-12T10:00:00"),
                                               "outlet_id": outlets[20], "order_id": "late-nov", "amount": "99.99",
                                               "currency": "USD", "lines": 1}))  # late, into a closed month
    return before, after


def prefixed(prefix: str, records):
    return [(prefix + topic, key, value) for topic, key, value in records]


def expected_at(records, as_of: str) -> dict:
    return oracle_kpis([value for _topic, _key, value in records], as_of, OracleSettings())


def published_now(values: dict, expected: dict) -> dict:
    """`values` without the periods that left the published set: they keep their last value
    (spec 8), which the oracle at a later as_of does not define."""
    windows = {key.split("|")[1] for key in expected}
    return {key: value for key, value in values.items()
            if not is_designator(key.split("|")[1]) or key.split("|")[1] in windows}


def wait_for_oracle(client, prefix: str, proc: WorkerProcess, expected: dict, what: str) -> None:
    def matches():
        assert proc.alive(), proc.log_tail()
        return kpi_differences(published_now(redis_records(client, prefix), expected), expected)

    wait_until(matches, timeout=150, interval=1, what=what)


def check_http_and_gauges(proc: WorkerProcess, expected: dict) -> None:
    """`/kpi` filtered by an alias and by a designator equals the oracle's keys of that window;
    the gauges hold the aliases and never a designated period."""
    for window in ("mtd", "2026-11", "lmtd", "2026-W49"):
        rows = kpi_all(proc, f"window={quote(window)}")
        wanted = {key: record for key, record in expected.items() if key.split("|")[1] == window}
        assert rows and all(row["window"] == window for row in rows), window
        assert kpi_differences(values_by_key(rows), wanted) == [], window
    status, text = proc.get("/metrics")
    assert status == 200
    gauges = gauge_values(text.decode())
    windows = {key.split("|")[1] for key in gauges}
    assert {"today", "wtd", "mtd", "qtd", "lmtd"} <= windows
    assert not any(is_designator(window) for window in windows)
    aliases = ("today", "mtd", "lmtd")
    wanted = {key: {"value": record["value"]} for key, record in expected.items()
              if key.split("|")[1] in aliases and key.split("|")[2] in ("global", "region", "territory")
              and record["value"] is not None}
    exported = {key: value for key, value in gauges.items() if key.split("|")[1] in aliases}
    assert kpi_differences(exported, wanted) == []


def test_aliases_move_at_local_midnight_and_closed_periods_keep_their_values(kafka_broker, redis_server, tmp_path):
    import redis

    before, after = month_end_traffic(seed=35)
    prefix, app_id = unique_names()
    client = redis.Redis.from_url(redis_server.url)
    state = tmp_path / "state"
    first_expected = expected_at(before, BEFORE_MIDNIGHT)
    proc = WorkerProcess(worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, state,
                                    KPI_CLOCK=BEFORE_MIDNIGHT), tmp_path / "worker-before.log").start()
    try:
        asyncio.run(produce(kafka_broker.bootstrap, prefixed(prefix, before)))
        wait_for_oracle(client, prefix, proc, first_expected, "values at 23:50 to equal the oracle")
        check_http_and_gauges(proc, first_expected)
    finally:
        proc.stop()

    # the clock advanced past local midnight: the same state, 20 minutes later
    second_expected = expected_at(before + after, AFTER_MIDNIGHT)
    assert second_expected["orders|mtd|global|all"]["value"] != first_expected["orders|mtd|global|all"]["value"]
    assert second_expected["orders|2026-11|global|all"] != first_expected["orders|2026-11|global|all"], \
        "the late November order corrects a closed month"
    assert first_expected["orders_target|mtd|global|all"]["value"] == 55  # the mid-month re-set
    assert second_expected["orders_target|mtd|global|all"]["value"] == 70  # December's, from midnight
    assert first_expected["visits_attainment|mtd|rep|rep-9"]["value"] == 0  # a scope with no events
    proc = WorkerProcess(worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, state,
                                    KPI_CLOCK=AFTER_MIDNIGHT), tmp_path / "worker-after.log").start()
    try:
        asyncio.run(produce(kafka_broker.bootstrap, prefixed(prefix, after)))
        wait_for_oracle(client, prefix, proc, second_expected, "values at 00:10 to equal the oracle")
        check_http_and_gauges(proc, second_expected)
        # September left the published months at midnight: its keys keep their last values
        september = {key: value for key, value in redis_records(client, prefix).items() if key.split("|")[1] == "2026-09"}
        assert september and kpi_differences(september, {key: value for key, value in first_expected.items()
                                                         if key.split("|")[1] == "2026-09"}) == []
        every: list[dict] = []
        topic = asyncio.run(latest_updates(kafka_broker.bootstrap, prefix + "kpi.updates", every))
        schema = kpi_update_schema()
        for message in every:
            schema.validate(message)
        assert kpi_differences(published_now(as_records(topic), second_expected), second_expected) == []
    finally:
        proc.stop()


def test_a_running_worker_moves_its_aliases_when_its_clock_crosses_midnight(kafka_broker, redis_server, tmp_path):
    import redis

    before, after = month_end_traffic(seed=36)
    latest_before = max(orjson.loads(value)["occurred_at"] for _t, _k, value in before)
    latest_after = max(orjson.loads(value)["occurred_at"] for _t, _k, value in after)
    assert parse_rfc3339_us(latest_before) < parse_rfc3339_us("2026-11-30T17:00:00Z") <= parse_rfc3339_us(latest_after)
    prefix, app_id = unique_names()
    client = redis.Redis.from_url(redis_server.url)
    proc = WorkerProcess(worker_env(kafka_broker.bootstrap, redis_server.url, prefix, app_id, tmp_path / "state",
                                    KPI_CLOCK="event"), tmp_path / "worker.log").start()
    try:
        asyncio.run(produce(kafka_broker.bootstrap, prefixed(prefix, before)))
        wait_for_oracle(client, prefix, proc, expected_at(before, latest_before),
                        "values at the latest event before midnight to equal the oracle")
        asyncio.run(produce(kafka_broker.bootstrap, prefixed(prefix, after)))
        expected = expected_at(before + after, latest_after)
        wait_for_oracle(client, prefix, proc, expected, "values after midnight to equal the oracle")
        check_http_and_gauges(proc, expected)
    finally:
        proc.stop()
