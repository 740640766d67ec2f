"""The worker's aiokafka consumer is created with the capped fetch wait and the minimum fetch
(stream/worker/app.py `shape_fetches`), not faust's fixed 1500 ms and 1 byte, and hands out fetched
records in turns."""

from __future__ import annotations

import asyncio

import faust
import pytest

from stream.kafka.faust_internals import shape_fetches

pytestmark = pytest.mark.unit


def _fetch_wait_and_minimum(app_id: str, shape: tuple[int, int] | None) -> tuple[int, int]:
    async def create() -> tuple[int, int]:
        app = faust.App(app_id, broker="kafka://127.0.0.1:1")
        if shape is not None:
            shape_fetches(app, *shape)
        consumer = app._new_consumer()
        # what faust's consumer thread calls when it starts (not started here: no broker needed)
        aiokafka_consumer = consumer._thread._create_worker_consumer(app.transport)
        return aiokafka_consumer._fetch_max_wait_ms, aiokafka_consumer._fetch_min_bytes

    return asyncio.run(create())


def test_faust_alone_lets_the_broker_hold_a_fetch_for_a_second_and_a_half_and_answer_for_one_byte():
    assert _fetch_wait_and_minimum("fetch-wait-default", None) == (1500, 1)


def test_the_worker_caps_how_long_the_broker_may_hold_a_fetch_and_sets_what_it_gathers_meanwhile():
    assert _fetch_wait_and_minimum("fetch-wait-capped", (20, 16384)) == (20, 16384)


@pytest.mark.parametrize("variable, field, default, other, bad", [
    ("KPI_FETCH_MAX_WAIT_MS", "fetch_max_wait_ms", 20, 100, "20ms"),
    ("KPI_FETCH_MIN_BYTES", "fetch_min_bytes", 16384, 1, "16k"),
])
def test_each_fetch_setting_comes_from_its_variable_and_rejects_nonsense(variable, field, default, other, bad):
    from stream.core.config import ConfigError, ServiceSettings

    assert getattr(ServiceSettings.from_env({}), field) == default
    assert getattr(ServiceSettings.from_env({variable: str(other)}), field) == other
    for nonsense in ("0", "-5", bad):
        with pytest.raises(ConfigError, match=variable):
            ServiceSettings.from_env({variable: nonsense})


def test_the_worker_builds_its_consumer_with_the_settings_fetch_shape():
    from stream.core.config import KpiSettings, ServiceSettings
    from stream.worker.app import KpiWorker

    async def shape() -> tuple[int, int]:
        settings = ServiceSettings(kpi=KpiSettings.from_env({}), app_id="fetch-shape", fetch_max_wait_ms=35,
                                   fetch_min_bytes=4096)
        app = KpiWorker(settings).app
        aiokafka_consumer = app._new_consumer()._thread._create_worker_consumer(app.transport)
        return aiokafka_consumer._fetch_max_wait_ms, aiokafka_consumer._fetch_min_bytes

    assert asyncio.run(shape()) == (35, 4096)


def test_the_worker_hands_out_fetched_records_a_partition_at_a_time_in_turns():
    from stream.core.config import KpiSettings, ServiceSettings
    from stream.worker.app import KpiWorker

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

    from stream.kafka.faust_internals import take_partition_turns

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
