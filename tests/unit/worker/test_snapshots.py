"""Engine snapshots (stream/worker/snapshots.py): a restored engine fed the remaining events equals the
oracle over all of them, and a snapshot is used only when its code, settings and facts match."""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from stream.core.clock import reference_instant_us
from stream.core.decode import Rejected, decode_event
from stream.core.engine import Family, KpiEngine
from stream.worker.snapshots import (SAVER_NICENESS, BackgroundSaver, CoveredBatches, EngineSnapshot, SnapshotShelf, engine_fingerprint,
                              missing_batches)
from stream.stages.updates import update_key
from tests.kpi_compare import kpi_differences
from tests.oracle import oracle_kpis
from tests.unit.test_engine_matches_oracle import AS_OF, engine_settings, histories, kpi_settings, oracle_settings

OWNER = "app test, topic prefix '', 8 partitions"


def apply_all(engine: KpiEngine, messages: list[bytes]) -> None:
    for raw in messages:
        try:
            event = decode_event(raw, reference_instant_us(engine.settings.clock, None), engine.settings)
        except Rejected:
            continue
        engine.apply(event)


def values(engine: KpiEngine) -> dict[str, dict]:
    engine.advance(engine.settings.clock.pinned_us)
    return {update_key(v): {"value": v.value, "numerator": v.numerator, "denominator": v.denominator}
            for v in engine.all_values()}


def order(n: int, outlet: str = "o1") -> bytes:
    return orjson.dumps({"event_id": f"e{n}", "type": "order.placed", "occurred_at": "2026-11-24T11:00:00Z",
                         "outlet_id": outlet, "order_id": f"x{n}", "amount": "2.50", "currency": "USD", "lines": 1})


@pytest.fixture
def settings():
    return engine_settings(60, (600, 3600), (900,), 1800)


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(messages=histories(), settings=kpi_settings(), split=st.floats(0, 1))
def test_engine_restored_from_a_snapshot_then_fed_the_rest_equals_the_oracle_over_all_events(messages, settings, split):
    cut = int(len(messages) * split)
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, messages[:cut])
    with tempfile.TemporaryDirectory() as directory:
        shelf = SnapshotShelf(Path(directory), engine_fingerprint(settings, OWNER))
        shelf.save(Family.OUTLET, 3, EngineSnapshot(engine, CoveredBatches(), []))
        del engine
        restored = shelf.take(Family.OUTLET, 3)
    assert restored is not None
    apply_all(restored.engine, messages[cut:])
    expected = oracle_kpis(messages, AS_OF, oracle_settings(settings))
    assert kpi_differences(values(restored.engine), expected) == []


def test_snapshot_keeps_covered_batches_and_unwritten_facts(tmp_path, settings):
    engine = KpiEngine(settings, settings.clock.pinned_us)
    covered = CoveredBatches()
    for number in (4, 9, 12):
        covered.add(("abc123", number))
    covered.add(("def456", 5))
    unwritten = [["o1", "e7", 5, order(7).decode()]]
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    shelf.save(Family.LEAD, 0, EngineSnapshot(engine, covered, unwritten))
    restored = shelf.take(Family.LEAD, 0)
    assert restored.unwritten == unwritten
    lookup = restored.covered.lookup()
    assert len(restored.covered) == 4
    assert ("abc123", 9) in lookup and ("def456", 5) in lookup
    assert ("abc123", 5) not in lookup and ("other", 9) not in lookup


def test_a_snapshot_is_taken_once(tmp_path, settings):
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    shelf.save(Family.OUTLET, 1, EngineSnapshot(KpiEngine(settings, 0), CoveredBatches(), []))
    assert shelf.take(Family.OUTLET, 1) is not None
    assert shelf.take(Family.OUTLET, 1) is None
    assert list(tmp_path.iterdir()) == []


def test_snapshot_written_under_other_settings_is_ignored_and_removed(tmp_path, settings, caplog):
    SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER)).save(
        Family.OUTLET, 1, EngineSnapshot(KpiEngine(settings, 0), CoveredBatches(), []))
    changed = dataclasses.replace(settings, dormancy_seconds=settings.dormancy_seconds + 60)
    with caplog.at_level(logging.WARNING):
        assert SnapshotShelf(tmp_path, engine_fingerprint(changed, OWNER)).take(Family.OUTLET, 1) is None
    assert "written by other code or settings" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_fingerprint_names_the_settings_and_the_owner(settings):
    base = engine_fingerprint(settings, OWNER)
    assert base == engine_fingerprint(dataclasses.replace(settings), OWNER)
    assert base != engine_fingerprint(dataclasses.replace(settings, windows_seconds=(600,)), OWNER)
    assert base != engine_fingerprint(settings, "app other, topic prefix '', 8 partitions")


def test_truncated_snapshot_is_ignored_not_raised(tmp_path, settings, caplog):
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, [order(n, f"o{n}") for n in range(50)])
    size = shelf.save(Family.OUTLET, 2, EngineSnapshot(engine, CoveredBatches(), []))
    path = tmp_path / "outlet-2.snapshot"
    path.write_bytes(path.read_bytes()[:size // 2])
    with caplog.at_level(logging.WARNING):
        assert shelf.take(Family.OUTLET, 2) is None
    assert "unreadable" in caplog.text


def test_discard_removes_untaken_snapshots_and_interrupted_saves_of_one_family(tmp_path, settings):
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    for family, partition in ((Family.OUTLET, 0), (Family.OUTLET, 5), (Family.LEAD, 0)):
        shelf.save(family, partition, EngineSnapshot(KpiEngine(settings, 0), CoveredBatches(), []))
    (tmp_path / ".outlet-7.snapshot.tmp").write_bytes(b"half")
    assert shelf.discard(Family.OUTLET) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lead-0.snapshot"]


def test_missing_batches_counts_covered_batches_not_in_the_table():
    covered = CoveredBatches()
    for number in (1, 2, 3):
        covered.add(("w1", number))
    table = [("w1", 1), ("w1", 3), ("w2", 2), ("w1", 4)]
    assert missing_batches(covered, table) == 1
    assert missing_batches(covered, table + [("w1", 2)]) == 0


def test_restored_engine_resends_every_scope(settings):
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, [order(n, f"o{n}") for n in range(5)])
    sent = {(family, scope) for family, scope, _ in engine.take_dirty()}
    assert engine.take_dirty() == []
    engine.mark_all_dirty()
    assert {(family, scope) for family, scope, _ in engine.take_dirty()} == sent


def test_outlet_state_pickles_field_for_field(settings):
    import pickle

    engine = KpiEngine(settings, settings.clock.pinned_us)
    visit = orjson.dumps({"event_id": "v1", "type": "visit.completed", "occurred_at": "2026-11-24T11:10:00Z",
                          "outlet_id": "o1", "visit_id": "visit-1", "rep_id": "r1"})
    onboard = orjson.dumps({"event_id": "b1", "type": "outlet.onboarded", "occurred_at": "2026-11-24T10:00:00Z",
                            "outlet_id": "o1", "region": "north", "territory": "T1", "rep_id": "r2"})
    apply_all(engine, [onboard, visit, order(1), order(2)])
    state = engine.outlets.state("o1")
    assert state.order_times and state.visits and state.orders_by_slot and state.onboarded_us  # every kind of field is set
    assert pickle.loads(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)) == state


def test_snapshot_and_membership_settings_come_from_the_environment_and_reject_nonsense():
    from stream.core.config import ConfigError, ServiceSettings

    assert ServiceSettings.from_env({}).snapshot_on_stop is True
    assert ServiceSettings.from_env({"KPI_SNAPSHOT_ON_STOP": "false"}).snapshot_on_stop is False
    assert ServiceSettings.from_env({"KPI_SNAPSHOT_ON_STOP": " Off "}).snapshot_on_stop is False
    with pytest.raises(ConfigError, match="KPI_SNAPSHOT_ON_STOP must be true or false"):
        ServiceSettings.from_env({"KPI_SNAPSHOT_ON_STOP": "sometimes"})
    assert ServiceSettings.from_env({}).group_instance_id == ""
    assert ServiceSettings.from_env({"KPI_GROUP_INSTANCE_ID": "kpi-stream-0"}).group_instance_id == "kpi-stream-0"


def wait_for(saver: BackgroundSaver, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = saver.poll()
        if report is not None:
            return report
        time.sleep(0.02)
    raise AssertionError("the background save did not finish")


def test_background_save_writes_the_engine_as_it_was_at_the_fork_while_the_worker_goes_on(tmp_path, settings):
    engine = KpiEngine(settings, settings.clock.pinned_us)
    apply_all(engine, [order(n, f"o{n % 7}") for n in range(40)])
    expected = values(engine)
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    saver = BackgroundSaver(shelf)
    covered = CoveredBatches()
    covered.add(("w1", 3))
    saver.start({(Family.OUTLET, 2): EngineSnapshot(engine, covered, [], {("w1", 4): [["o1", "e99", 5, "{}"]]})})
    apply_all(engine, [order(n, "late") for n in range(40, 60)])  # after the fork: not in the snapshot
    report = wait_for(saver)
    assert report.saved and report.partitions == [(Family.OUTLET, 2)] and report.size > 0
    assert not saver.running
    restored = shelf.take(Family.OUTLET, 2)
    assert restored is not None and ("w1", 3) in restored.covered.lookup()
    assert restored.in_flight == {("w1", 4): [["o1", "e99", 5, "{}"]]}
    assert kpi_differences(values(restored.engine), expected) == []
    assert values(restored.engine) != values(engine)


class SlowToPickle:
    def __reduce__(self):
        time.sleep(60)  # in the forked copy only: the save is still running when it is stopped
        return SlowToPickle, ()


def test_a_stopped_background_save_reports_failure_and_leaves_no_snapshot(tmp_path, settings):
    engine = KpiEngine(settings, settings.clock.pinned_us)
    shelf = SnapshotShelf(tmp_path, engine_fingerprint(settings, OWNER))
    saver = BackgroundSaver(shelf)
    saver.start({(Family.LEAD, 1): EngineSnapshot(engine, CoveredBatches(), [SlowToPickle()])})
    report = saver.stop()
    assert report is not None and not report.saved and not saver.running
    assert shelf.take(Family.LEAD, 1) is None
    shelf.discard(Family.LEAD)
    assert list(tmp_path.iterdir()) == []


class RecordsNiceness:
    """Pickled in the forked copy: writes that process's CPU niceness to `path`."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        self.path.write_text(str(os.nice(0)))
        return str, ("pickled",)


def test_the_background_copy_pickles_at_the_lowest_cpu_priority_and_the_worker_keeps_its_own(tmp_path, settings):
    worker_niceness = os.nice(0)
    engine = KpiEngine(settings, settings.clock.pinned_us)
    shelf = SnapshotShelf(tmp_path / "shelf", engine_fingerprint(settings, OWNER))
    saver = BackgroundSaver(shelf)
    recorded = tmp_path / "niceness"
    saver.start({(Family.LEAD, 1): EngineSnapshot(engine, CoveredBatches(), [RecordsNiceness(recorded)])})
    assert wait_for(saver).saved
    assert SAVER_NICENESS == 19 and int(recorded.read_text()) == 19  # the lowest, whatever the worker's
    assert os.nice(0) == worker_niceness
