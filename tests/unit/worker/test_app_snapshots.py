"""The worker's side of engine snapshots (KpiWorker._save_snapshots / rebuild), without a broker:
the facts tables are faust's in-memory stores, filled as the worker fills them, and the changelog
side of a flush is left out. The end-to-end form, with Kafka, is
tests/e2e/test_snapshot_restart.py; this one pins what it cannot make happen on demand: facts
applied but not yet written when the worker stops, and a covered batch missing after a restart."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import tracemalloc

import orjson
import pytest
from faust.types import TP
from prometheus_client import generate_latest

from stream.devtools import generator
from stream.core.config import ClockSetting, KpiSettings, ServiceSettings
from stream.core.decode import Rejected, decode_event
from stream.core.engine import KPI_FAMILIES, Family, Outcome, family_of
from stream.kafka.topics import INPUT_TOPICS
from stream.core.events import partition_key
from stream.core.timeparse import format_rfc3339_us
from stream.stages.updates import update_key
from stream.stages.outgoing import Outgoing
from stream.kafka.faust_internals import store_put_all
from stream.kafka.wire_facts import decode_fact_batch
from stream.worker.app import KpiWorker
from stream.worker.recovery import SNAPSHOT_AFTER_REBUILD_SECONDS
from tests.e2e.harness import counter_total
from tests.kpi_compare import kpi_differences
from tests.oracle import OracleSettings, oracle_kpis

CONFIG = generator.GeneratorConfig(seed=31, events=1_500, outlets=150, malformed_fraction=0.0)
AS_OF_US = generator.now_us(CONFIG)


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    return [m.value for m in generator.generate(CONFIG)]


def make_worker(state_dir, held_acks: list | None = None, **service_settings) -> KpiWorker:
    """A worker whose changelog writes are acknowledged at once -- or, with `held_acks`, when the
    test calls the acknowledgements collected there."""
    settings = ServiceSettings(kpi=KpiSettings(clock=ClockSetting("pinned", AS_OF_US)), app_id="snapshot-test",
                               state_dir=str(state_dir), partitions=1, **service_settings)
    worker = KpiWorker(settings)
    worker.recovery.assigned_partitions = lambda family: {0}

    async def changelog_without_kafka(table, partition, entries, written=None, store_when_written=False) -> None:
        messages = [Outgoing(partition, key, value, items=rest[0] if rest else 1) for key, value, *rest in entries]

        def acknowledged() -> None:  # what ChangelogWriter.send does when the broker has them
            if store_when_written:
                store_put_all(table, partition, [(m.key, m.value) for m in messages])
            if written:
                written(partition, messages)
        if held_acks is None:
            acknowledged()
        else:
            held_acks.append(acknowledged)
    worker.facts.writer.send = changelog_without_kafka
    return worker


def acknowledge(held_acks: list) -> None:
    while held_acks:
        held_acks.pop(0)()


def facts_in_table(worker: KpiWorker) -> list[list]:
    return [fact for family in Family for key, value in worker.fact_tables[family].data.items()
            for fact in decode_fact_batch(value)[1]]


def rebuild(worker: KpiWorker) -> None:
    async def all_families() -> None:
        for family in Family:
            await worker.recovery.rebuild(family)
    asyncio.run(all_families())


def accept(worker: KpiWorker, raw: bytes) -> None:
    """What the input handler (EntityStage.handle) does with an event on its own topic and
    key: apply it, and keep its fact for the next flush."""
    try:
        event = decode_event(raw, AS_OF_US, worker.kpi)
    except Rejected:
        return
    family = family_of(event)
    if worker.entity_stage.entity_partition(family, 0).engine.apply(event) is Outcome.DUPLICATE:
        return
    worker.facts.add(family, 0, [partition_key(event), event.event_id, event.ref_us, raw.decode()])


def copy_tables(source: KpiWorker, target: KpiWorker, leave_out: set[bytes] = frozenset()) -> None:
    """What faust's recovery does for a new process: the tables as their changelogs hold them."""
    for family in Family:
        for key, value in source.fact_tables[family].data.items():
            if key not in leave_out:
                target.fact_tables[family].data[key] = value


def values(worker: KpiWorker) -> dict[str, dict]:
    out = {}
    targets = worker.entity_stage.entities[(Family.TARGET, 0)].engine
    targets.advance(AS_OF_US)
    for family in KPI_FAMILIES:
        engine = worker.entity_stage.entities[(family, 0)].engine
        engine.advance(AS_OF_US)
        vectors = engine.vectors(family)
        found = []
        for scope, vector in vectors.items():
            found.extend(engine.evaluate(family, scope, vector, AS_OF_US))
        for scope in engine.period_scopes(family):  # calendar periods: restored with the engine too
            found.extend(engine.period_values(family, scope, vectors.get(scope)))
        for scope in targets.target_scopes(family):  # targets: restored with their own engine
            found.extend(engine.period_reader.target_values(
                engine.period_clock, family.value, scope, dict(engine.period_groups(family, scope)),
                targets.targets.resolved(family.value, scope), AS_OF_US))
        for v in found:
            out[update_key(v)] = {"value": v.value, "numerator": v.numerator, "denominator": v.denominator}
    return out


def oracle(raws: list[bytes]) -> dict[str, dict]:
    return oracle_kpis(raws, format_rfc3339_us(AS_OF_US), OracleSettings())


def facts_applied_in_rebuilds(log_text: str) -> int:
    """The facts the logged rebuilds applied on top of what they restored."""
    return sum(int(n) for n in re.findall(r"then (\d+) facts applied", log_text))


def rebuilds(worker: KpiWorker, source: str) -> float:
    from prometheus_client import generate_latest
    return counter_total(generate_latest(worker.metrics.registry).decode(), "kpi_stream_partition_rebuilds_total",
                         source=source)


def stopped_with_unwritten_facts(tmp_path, messages) -> tuple[KpiWorker, list[bytes], list[bytes]]:
    """A worker that wrote the first half of the events as facts, then applied a quarter more
    and stopped before writing those: its snapshots carry them."""
    half, three_quarters = len(messages) // 2, 3 * len(messages) // 4
    worker = make_worker(tmp_path / "a")
    rebuild(worker)
    for raw in messages[:half]:
        accept(worker, raw)
    asyncio.run(worker.flush_facts())
    for raw in messages[half:three_quarters]:
        accept(worker, raw)
    unwritten = {family: list(facts) for (family, _), facts in worker.facts.pending.items()}
    assert sum(map(len, unwritten.values())) > 0
    asyncio.run(worker.recovery.save_snapshots())
    assert len(list((tmp_path / "a" / "v1" / "engine-snapshots").glob("*.snapshot"))) == len(Family)
    return worker, messages[:three_quarters], messages[three_quarters:]


def test_restart_from_snapshots_applies_facts_written_since_and_writes_unwritten_facts_again(tmp_path, messages, caplog):
    stopped, applied, rest = stopped_with_unwritten_facts(tmp_path, messages)
    stopped_pending = {family: list(facts) for (family, _), facts in stopped.facts.pending.items()}

    # another pod held the partition meanwhile (rebuilt from facts, its own state directory): it
    # re-read the events whose facts were not written (their offsets were not committed) and the rest
    other = make_worker(tmp_path / "other")
    copy_tables(stopped, other)
    rebuild(other)
    for raw in messages[len(applied) - sum(map(len, stopped_pending.values())):]:
        accept(other, raw)
    asyncio.run(other.flush_facts())

    restarted = make_worker(tmp_path / "a")
    copy_tables(other, restarted)
    with caplog.at_level(logging.INFO, logger="stream.worker.recovery"):
        rebuild(restarted)
    assert rebuilds(restarted, "snapshot") == len(Family) and rebuilds(restarted, "facts") == 0
    # only `other`'s batches were applied; the engines now cover every batch in their tables
    applied_on_top = facts_applied_in_rebuilds(caplog.text)
    assert applied_on_top == sum(len(decode_fact_batch(value)[1]) for family in Family
                                 for key, value in other.fact_tables[family].data.items()
                                 if key not in stopped.fact_tables[family].data)
    for family in Family:
        assert len(restarted.entity_stage.entities[(family, 0)].covered) == len(restarted.fact_tables[family].data)
    # the facts the stopped worker applied but never wrote: held by the restored engines, and
    # pending again so that the next flush writes them (the events' offsets were not committed)
    for family, facts in stopped_pending.items():
        assert restarted.facts.pending[(family, 0)][:len(facts)] == facts
    # the re-read events are in the snapshots and in `other`'s batches: counted once
    assert kpi_differences(values(restarted), oracle(messages)) == []

    # written twice now (by `other`, and again below): a rebuild from facts alone counts them once
    asyncio.run(restarted.flush_facts())
    from_facts = make_worker(tmp_path / "from-facts")
    copy_tables(restarted, from_facts)
    rebuild(from_facts)
    assert rebuilds(from_facts, "facts") == len(Family)
    assert kpi_differences(values(from_facts), oracle(messages)) == []


def test_restored_engines_equal_the_stopped_ones_and_their_unwritten_facts_are_written_again(tmp_path, messages):
    stopped, applied, _ = stopped_with_unwritten_facts(tmp_path, messages)
    restarted = make_worker(tmp_path / "a")
    copy_tables(stopped, restarted)
    rebuild(restarted)
    assert rebuilds(restarted, "snapshot") == len(Family)
    assert kpi_differences(values(restarted), values(stopped)) == []
    assert kpi_differences(values(restarted), oracle(applied)) == []
    # nobody re-read the events whose facts were not written: only the restarted worker can write them
    asyncio.run(restarted.flush_facts())
    from_facts = make_worker(tmp_path / "from-facts")
    copy_tables(restarted, from_facts)
    rebuild(from_facts)
    assert kpi_differences(values(from_facts), oracle(applied)) == []


def test_snapshot_covering_a_batch_missing_from_the_facts_table_is_ignored(tmp_path, messages, caplog):
    stopped, _, _ = stopped_with_unwritten_facts(tmp_path, messages)
    outlet_batches = list(stopped.fact_tables[Family.OUTLET].data.keys())
    lost = outlet_batches[len(outlet_batches) // 2]
    restarted = make_worker(tmp_path / "a")
    copy_tables(stopped, restarted, leave_out={lost})
    with caplog.at_level(logging.WARNING):
        rebuild(restarted)
    assert "1 of the" in caplog.text and "fact batches it covers are not in the facts table" in caplog.text
    assert rebuilds(restarted, "facts") == 1 and rebuilds(restarted, "snapshot") == len(Family) - 1
    # the outlet partition holds exactly the facts its table holds (the rest is re-read from input)
    in_table = [fact[3].encode() for key, value in restarted.fact_tables[Family.OUTLET].data.items()
                for fact in decode_fact_batch(value)[1]]
    outlet_values = {k: v for k, v in values(restarted).items()
                     if k.split("|")[0] in ("active_accounts", "orders", "visits", "sales_amount")}
    expected = {k: v for k, v in oracle(in_table).items() if k.split("|")[0] in
                ("active_accounts", "orders", "visits", "sales_amount")}
    assert kpi_differences(outlet_values, expected) == []
    assert orjson.loads(lost)[0] == 0


def test_facts_enter_the_table_only_when_acknowledged_and_a_rebuild_meanwhile_keeps_them(tmp_path, messages):
    held: list = []
    worker = make_worker(tmp_path / "a", held)
    rebuild(worker)
    half = messages[:len(messages) // 2]
    for raw in half:
        accept(worker, raw)
    sent = worker.facts.pending_count
    asyncio.run(worker.flush_facts())
    assert held and facts_in_table(worker) == [], "sent, not acknowledged: not in the local store"
    assert worker.facts.unwritten > 0
    rebuild(worker)  # a rebalance while the batches are on their way: they are state all the same
    assert kpi_differences(values(worker), oracle(half)) == []
    acknowledge(held)
    assert worker.facts.unwritten == 0 and not any(worker.facts.in_flight.values())
    for family in Family:
        assert len(worker.entity_stage.entities[(family, 0)].covered) == len(worker.fact_tables[family].data)
    assert len(facts_in_table(worker)) == sent > 0


def test_snapshot_with_batches_in_flight_covers_those_that_landed_and_writes_the_others_again(tmp_path, messages):
    held: list = []
    stopped = make_worker(tmp_path / "a", held)
    rebuild(stopped)
    third = len(messages) // 3
    for raw in messages[:third]:
        accept(stopped, raw)
    asyncio.run(stopped.flush_facts())
    landing = list(held)  # acknowledged only after the snapshot is saved
    held.clear()
    for raw in messages[third:2 * third]:
        accept(stopped, raw)
    asyncio.run(stopped.flush_facts())
    lost = list(held)  # never acknowledged: the process stopped first
    in_flight = {family: [f for _, facts in flying.values() for f in facts]
                 for (family, _), flying in stopped.facts.in_flight.items()}
    asyncio.run(stopped.recovery.save_snapshots())
    for ack in landing:
        ack()
    landed_facts = len(facts_in_table(stopped))
    assert landed_facts > 0 and lost

    restarted = make_worker(tmp_path / "a")
    copy_tables(stopped, restarted)
    rebuild(restarted)
    assert rebuilds(restarted, "snapshot") == len(Family) and rebuilds(restarted, "facts") == 0
    assert kpi_differences(values(restarted), oracle(messages[:2 * third])) == []
    # the batches that landed are covered; the lost ones are pending again, and only those
    for family in Family:
        assert len(restarted.entity_stage.entities[(family, 0)].covered) == len(restarted.fact_tables[family].data)
    lost_facts = {tuple(f[:3]) for family, facts in in_flight.items() for f in facts} - {
        tuple(f[:3]) for f in facts_in_table(stopped)}
    assert {tuple(f[:3]) for (_, _), facts in restarted.facts.pending.items() for f in facts} == lost_facts
    # so every accepted fact is in the table exactly once, and a rebuild from facts alone agrees
    asyncio.run(restarted.flush_facts())
    identities = [tuple(f[:3]) for f in facts_in_table(restarted)]
    assert len(identities) == len(set(identities)) == landed_facts + len(lost_facts)
    from_facts = make_worker(tmp_path / "from-facts")
    copy_tables(restarted, from_facts)
    rebuild(from_facts)
    assert kpi_differences(values(from_facts), oracle(messages[:2 * third])) == []


def background_snapshot(worker: KpiWorker) -> None:
    """What the flush timer does every KPI_SNAPSHOT_INTERVAL: fork a save, here waited for."""
    worker.recovery.next_snapshot_at = 0.0
    worker.recovery.snapshot_if_due()
    assert worker.recovery.saver.running
    deadline = time.monotonic() + 60
    while worker.recovery.saver.running and time.monotonic() < deadline:
        worker.recovery.snapshot_if_due()  # polls the save; starts nothing new before the interval
        time.sleep(0.02)
    assert not worker.recovery.saver.running
    assert counter_total(generate_latest(worker.metrics.registry).decode(),
                         "kpi_stream_background_snapshots_total", outcome="saved") >= 1


def test_after_a_kill_the_background_snapshot_is_restored_and_only_later_facts_are_applied(tmp_path, messages, caplog):
    worker = make_worker(tmp_path / "a")
    rebuild(worker)
    half = len(messages) // 2
    for raw in messages[:half]:
        accept(worker, raw)
    asyncio.run(worker.flush_facts())
    background_snapshot(worker)
    for raw in messages[half:]:
        accept(worker, raw)
    later = worker.facts.pending_count
    asyncio.run(worker.flush_facts())
    # killed here: no snapshot at stop

    restarted = make_worker(tmp_path / "a")
    copy_tables(worker, restarted)
    with caplog.at_level(logging.INFO, logger="stream.worker.recovery"):
        rebuild(restarted)
    assert rebuilds(restarted, "snapshot") == len(Family) and rebuilds(restarted, "facts") == 0
    assert facts_applied_in_rebuilds(caplog.text) == later
    assert kpi_differences(values(restarted), oracle(messages)) == []
    assert not any(restarted.facts.pending.values()), "every fact was in the table: nothing to write again"


def test_a_rebalance_restores_the_background_snapshot_and_applies_batches_in_flight_once(tmp_path, messages):
    held: list = []
    worker = make_worker(tmp_path / "a", held)
    rebuild(worker)
    third = len(messages) // 3
    for raw in messages[:third]:
        accept(worker, raw)
    asyncio.run(worker.flush_facts())  # on its way during the snapshot and the rebalance
    background_snapshot(worker)
    for raw in messages[third:2 * third]:
        accept(worker, raw)
    asyncio.run(worker.flush_facts())  # sent after the snapshot, not acknowledged either
    sent = sum(len(facts) for flying in worker.facts.in_flight.values() for _, facts in flying.values())

    rebuild(worker)  # a rebalance that gives the worker its partitions back
    assert rebuilds(worker, "snapshot") == len(Family)
    assert kpi_differences(values(worker), oracle(messages[:2 * third])) == []
    assert not any(worker.facts.pending.values()), "the batches in flight are still this worker's to land"
    acknowledge(held)
    for family in Family:
        assert len(worker.entity_stage.entities[(family, 0)].covered) == len(worker.fact_tables[family].data)
    identities = [tuple(f[:3]) for f in facts_in_table(worker)]
    assert len(identities) == len(set(identities)) == sent


def revoke_everything(worker: KpiWorker) -> None:
    """What faust's eager rebalance does first: every assigned partition revoked."""
    topics = [worker.topics.input(name) for name in INPUT_TOPICS]
    asyncio.run(worker.on_partitions_revoked(worker.app, {TP(topic, 0) for topic in topics}))


def test_a_partition_kept_through_a_rebalance_resumes_with_its_engine_instead_of_a_rebuild(tmp_path, messages, caplog):
    worker = make_worker(tmp_path / "a")
    rebuild(worker)
    half, three_quarters = len(messages) // 2, 3 * len(messages) // 4
    for raw in messages[:half]:
        accept(worker, raw)
    asyncio.run(worker.flush_facts())
    for raw in messages[half:three_quarters]:
        accept(worker, raw)  # still pending when the rebalance comes: dropped, their events re-read
    dropped = {family: list(facts) for (family, _), facts in worker.facts.pending.items()}
    revoke_everything(worker)
    assert not worker.entity_stage.entities and not worker.facts.pending

    with caplog.at_level(logging.INFO, logger="stream.worker.recovery"):
        rebuild(worker)  # the same partitions come back
    assert rebuilds(worker, "kept") == len(Family) and rebuilds(worker, "snapshot") == 0
    assert facts_applied_in_rebuilds(caplog.text) == 0
    assert not worker.recovery.parked
    for family, facts in dropped.items():
        assert worker.facts.pending[(family, 0)] == facts, "the dropped facts are the engine's: written again"
    for raw in messages[half:]:  # re-read from the committed offset, then the rest
        accept(worker, raw)
    assert kpi_differences(values(worker), oracle(messages)) == []
    asyncio.run(worker.flush_facts())
    from_facts = make_worker(tmp_path / "from-facts")
    copy_tables(worker, from_facts)
    rebuild(from_facts)
    assert kpi_differences(values(from_facts), oracle(messages)) == []


def test_engines_of_partitions_that_went_elsewhere_are_dropped_at_the_rebuild(tmp_path, messages):
    worker = make_worker(tmp_path / "a")
    rebuild(worker)
    for raw in messages[:100]:
        accept(worker, raw)
    revoke_everything(worker)
    assert len(worker.recovery.parked) == len(Family)
    worker.recovery.assigned_partitions = lambda family: set()
    rebuild(worker)
    assert not worker.recovery.parked and not worker.entity_stage.entities


def test_engines_restored_from_files_leave_the_collectors_young_generations(tmp_path, messages):
    import gc

    stopped, _, _ = stopped_with_unwritten_facts(tmp_path, messages)
    restarted = make_worker(tmp_path / "a")
    copy_tables(stopped, restarted)
    gc.unfreeze()
    try:
        rebuild(restarted)
        assert rebuilds(restarted, "snapshot") == len(Family)
        assert gc.get_freeze_count() > 0, "restored objects moved out of the collected generations"
        assert gc.get_count()[0] < 700
    finally:
        gc.unfreeze()


def test_facts_kept_in_the_table_store_take_about_the_memory_of_their_bytes(tmp_path, messages):
    """A stored batch of facts -- kept for good with the default in-memory store -- must not hold
    orjson's ~4 KB output buffers for its key and value (stream/core/jsonbytes.py)."""
    worker = make_worker(tmp_path)
    rebuild(worker)
    for raw in messages[:400]:
        accept(worker, raw)
    pending, worker.facts.pending = worker.facts.pending, {}
    tracemalloc.start()
    try:
        for (family, partition), facts in pending.items():
            for fact in facts:  # one batch per fact: many small keys and values
                worker.facts.pending = {(family, partition): [fact]}
                worker.facts.pending_count = 1
                asyncio.run(worker.flush_facts())
        grown = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    stored = [(key, value) for family in Family for key, value in worker.fact_tables[family].data.items()]
    assert len(stored) == sum(map(len, pending.values()))
    stored_bytes = sum(len(key) + len(value) for key, value in stored)
    assert grown < 3 * stored_bytes, f"{grown / len(stored):.0f} bytes held per batch of {stored_bytes / len(stored):.0f}"


def test_a_start_from_nothing_waits_the_regular_interval_for_its_first_background_snapshot(tmp_path, messages):
    """A background save costs the worker a burst of copy-on-write faults (docs/performance.md):
    only a rebuild that restored or re-applied state -- whose snapshot files are then used up --
    brings the next one forward."""
    fresh = make_worker(tmp_path / "a")
    interval = fresh.settings.snapshot_interval_seconds
    assert interval > SNAPSHOT_AFTER_REBUILD_SECONDS
    rebuild(fresh)
    assert fresh.recovery.next_snapshot_at - time.monotonic() > interval - 5
    for raw in messages[: len(messages) // 2]:
        accept(fresh, raw)
    asyncio.run(fresh.flush_facts())

    restarted = make_worker(tmp_path / "a")  # killed: no snapshot yet, the facts are in the table
    copy_tables(fresh, restarted)
    rebuild(restarted)
    assert rebuilds(restarted, "facts") == len(Family)
    assert restarted.recovery.next_snapshot_at - time.monotonic() <= SNAPSHOT_AFTER_REBUILD_SECONDS


def test_engines_restored_from_snapshots_keep_as_many_outlets_hot_as_the_current_setting_says(tmp_path, messages):
    stopped, _, _ = stopped_with_unwritten_facts(tmp_path, messages)
    assert stopped.entity_stage.entities[(Family.OUTLET, 0)].engine.outlets.hot_limit == 8192
    restarted = make_worker(tmp_path / "a", hot_outlets=3)
    copy_tables(stopped, restarted)
    rebuild(restarted)
    assert rebuilds(restarted, "snapshot") == len(Family)
    assert restarted.entity_stage.entities[(Family.OUTLET, 0)].engine.outlets.hot_limit == 3
