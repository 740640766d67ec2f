"""`kpi_stream_rep_territory_outlets` on a worker's /metrics (stream/worker/metrics.py,
RepTerritoryOutlets), without a broker: exported only with the rep scope (KPI_EXPORT_SCOPES), the
sum over the outlet partitions the worker holds, and nothing of a partition once it is revoked."""

from __future__ import annotations

import asyncio

import orjson
from faust.types import TP
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stream.core.config import KpiSettings, ServiceSettings
from stream.core.engine import Family
from stream.worker.app import KpiWorker
from stream.worker.metrics import REP_TERRITORY_OUTLETS
from tests.unit.core.test_outlets import onboarding
from tests.unit.worker.test_snapshots import apply_all


def make_worker(scopes: str) -> KpiWorker:
    kpi = KpiSettings.from_env({"KPI_CLOCK": "2026-11-24T12:00:30Z"})
    return KpiWorker(ServiceSettings(kpi=kpi, app_id="rep-territory", export_scopes=tuple(scopes.split(","))))


def exported(worker: KpiWorker, *names: str) -> dict[tuple[str, str], float]:
    registry = worker.metrics.registry
    text = generate_latest(registry.restricted_registry(list(names)) if names else registry).decode()
    return {(s.labels["territory"], s.labels["rep"]): s.value for family in text_string_to_metric_families(text)
            if family.name == REP_TERRITORY_OUTLETS for s in family.samples}


def feed(worker: KpiWorker, partition: int, docs: list[dict]) -> None:
    apply_all(worker.entity_stage.entity_partition(Family.OUTLET, partition).engine, [orjson.dumps(d) for d in docs])


def test_sums_the_held_outlet_partitions_and_forgets_a_revoked_one():
    worker = make_worker("global,region,territory,rep")
    assert exported(worker) == {}, "no outlets yet: no series"
    feed(worker, 0, [onboarding("o1", "b1"), onboarding("o2", "b2", rep_id="r2")])
    feed(worker, 1, [onboarding("o3", "b3"), onboarding("o4", "b4", territory="T2")])
    worker.entity_stage.entity_partition(Family.LEAD, 1)  # other families hold no outlets
    both = {("T1", "r1"): 2.0, ("T1", "r2"): 1.0, ("T2", "r1"): 1.0}
    assert exported(worker) == both
    assert exported(worker, REP_TERRITORY_OUTLETS) == both, "a scrape may ask for this family alone"
    assert exported(worker, "kpi_stream_ready") == {}

    asyncio.run(worker.on_partitions_revoked(worker.app, {TP(worker.topics.input("sales.outlets"), 1)}))
    assert exported(worker) == {("T1", "r1"): 1.0, ("T1", "r2"): 1.0}


def test_not_exported_without_the_rep_scope():
    worker = make_worker("global,region,territory")
    feed(worker, 0, [onboarding("o1", "b1")])
    text = generate_latest(worker.metrics.registry).decode()
    assert REP_TERRITORY_OUTLETS not in text
