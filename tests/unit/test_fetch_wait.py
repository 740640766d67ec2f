"""The worker's aiokafka consumer is created with the capped fetch wait (stream/worker.py
`cap_fetch_wait`), not faust's fixed 1500 ms, and hands out fetched records in turns."""

from __future__ import annotations

import asyncio

import faust
import pytest

from stream.worker import cap_fetch_wait

pytestmark = pytest.mark.unit


def _fetch_max_wait_ms(app_id: str, cap_ms: int | None) -> int:
    async def create() -> int:
        app = faust.App(app_id, broker="kafka://127.0.0.1:1")
        if cap_ms is not None:
            cap_fetch_wait(app, cap_ms)
        consumer = app._new_consumer()
        # what faust's consumer thread calls when it starts (not started here: no broker needed)
        aiokafka_consumer = consumer._thread._create_worker_consumer(app.transport)
        return aiokafka_consumer._fetch_max_wait_ms

    return asyncio.run(create())


def test_faust_alone_lets_the_broker_hold_an_empty_fetch_for_a_second_and_a_half():
    assert _fetch_max_wait_ms("fetch-wait-default", None) == 1500


def test_the_worker_caps_how_long_the_broker_may_hold_an_empty_fetch():
    assert _fetch_max_wait_ms("fetch-wait-capped", 20) == 20


def test_the_cap_comes_from_kpi_fetch_max_wait_ms_and_rejects_nonsense():
    from stream.config import ConfigError, ServiceSettings

    assert ServiceSettings.from_env({}).fetch_max_wait_ms == 20
    assert ServiceSettings.from_env({"KPI_FETCH_MAX_WAIT_MS": "100"}).fetch_max_wait_ms == 100
    for bad in ("0", "-5", "20ms"):
        with pytest.raises(ConfigError, match="KPI_FETCH_MAX_WAIT_MS"):
            ServiceSettings.from_env({"KPI_FETCH_MAX_WAIT_MS": bad})


def test_the_worker_hands_out_fetched_records_a_partition_at_a_time_in_turns():
    from stream.config import KpiSettings, ServiceSettings
    from stream.worker import KpiWorker

    async def fetch_call() -> str:
        app = KpiWorker(ServiceSettings(kpi=KpiSettings.from_env({}), app_id="turns")).app
        return app._new_consumer()._thread._fetch_records.__qualname__

    # what faust's getmany calls on its consumer thread (tests/integration/test_partition_fairness.py
    # shows what the turns change, against a real broker)
    assert asyncio.run(fetch_call()).startswith("take_partition_turns.")


def test_if_aiokafka_moves_its_fetch_buffer_records_still_flow_without_turns(caplog):
    """The turns reorder a private aiokafka structure (versions pinned); should it move, fetching
    must go on in aiokafka's own order, with one error in the log -- never stop consuming."""
    from types import SimpleNamespace

    from stream.worker import take_partition_turns

    batch = {("sales.orders", 0): ["record"]}

    async def fetch_records(aiokafka_consumer, active_partitions, timeout=None, max_records=None):
        return batch

    thread = SimpleNamespace(_fetch_records=fetch_records)
    app = SimpleNamespace(_new_consumer=lambda: SimpleNamespace(_thread=thread))
    take_partition_turns(app)
    fetch = app._new_consumer()._thread._fetch_records
    consumer_without_fetcher = SimpleNamespace()

    async def twice():
        return [await fetch(consumer_without_fetcher, set(), timeout=0.1, max_records=500) for _ in range(2)]

    with caplog.at_level("ERROR"):
        assert asyncio.run(twice()) == [batch, batch]
    assert len([r for r in caplog.records if "without turns" in r.getMessage()]) == 1
