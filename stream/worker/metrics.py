"""Prometheus metrics: the processor's health and one gauge per KPI.

Names are public (dashboards and alert rules use them; a test checks every panel query
against a live /metrics). KPI gauges are `kpi_<kpi name>` with labels
window (`none` for KPIs without one), scope, scope_id, and horizon / kind where the KPI has one.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

KPI_GAUGE_PREFIX = "kpi_"
NO_WINDOW_LABEL = "none"

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class ProcessorMetrics:
    registry: CollectorRegistry
    events_in: Counter  # labels: topic, type
    deadletters: Counter  # labels: reason
    deadletters_already_written: Counter
    ignored: Counter  # labels: reason (duplicate, already_closed, duplicate_order)
    late_corrections: Counter  # labels: family
    repartitioned: Counter  # labels: topic (where the forwarded record arrived)
    consumer_lag: Gauge  # labels: topic, partition
    partition_stalled: Gauge  # labels: topic, partition
    offset_holes: Counter  # labels: topic
    offset_gaps: Counter  # labels: topic
    publish_latency: Histogram  # per applied event: produced -> its changes published
    stage_delay: Histogram  # labels: stage (input, partials, publication): where publish_latency goes
    gc_pause: Histogram  # labels: generation
    backpressure: Counter  # seconds the entity agents waited for the facts backlog to shrink
    facts_unacknowledged: Gauge
    state_entities: Gauge  # labels: kind
    partition_rebuilds: Counter  # labels: family, source (snapshot, facts)
    rebuild_seconds: Histogram  # labels: family
    background_snapshots: Counter  # labels: outcome (saved, failed)
    background_snapshot_seconds: Histogram
    last_publish: Gauge
    updates_published: Counter
    redis_up: Gauge
    redis_backlog: Gauge
    ready: Gauge


def build_processor_metrics(registry: CollectorRegistry | None = None) -> ProcessorMetrics:
    registry = registry or CollectorRegistry()
    return ProcessorMetrics(
        registry=registry,
        events_in=Counter(
            "kpi_stream_events_consumed", "Input messages consumed, by source topic and event type "
            "(`invalid` when the type could not be read)", ["topic", "type"], registry=registry,
        ),
        deadletters=Counter(
            "kpi_stream_deadletters", "Input messages rejected to the dead-letter topic, by reason",
            ["reason"], registry=registry,
        ),
        deadletters_already_written=Counter(
            "kpi_stream_deadletters_already_written", "Rejected input messages re-read after a restart or "
            "rebalance whose dead letter the partition's previous owner had written: not written again",
            registry=registry,
        ),
        ignored=Counter(
            "kpi_stream_ignored_events", "Valid events that change no KPI: duplicate, already_closed, duplicate_order",
            ["reason"], registry=registry,
        ),
        late_corrections=Counter(
            "kpi_stream_late_corrections", "Accepted events whose slot is older than the current slot "
            "(they correct already published windows)", ["family"], registry=registry,
        ),
        repartitioned=Counter(
            "kpi_stream_records_repartitioned", "Accepted input records forwarded to their entity's "
            "partition (Kafka's default murmur2 partition of the entity key, on their type's topic) "
            "before any state saw them, by the topic they arrived on: every record of sales.events, "
            "and records of the typed topics sent with another key or partitioner", ["topic"], registry=registry,
        ),
        offset_holes=Counter(
            "kpi_stream_offset_holes", "Times faust delivered a message past offsets not yet applied "
            "and the worker re-read the partition from the first missing one", ["topic"], registry=registry,
        ),
        offset_gaps=Counter(
            "kpi_stream_offset_gaps", "Offset ranges with no messages even after re-reading "
            "(transaction markers, compaction), accepted as gaps", ["topic"], registry=registry,
        ),
        consumer_lag=Gauge(
            "kpi_stream_consumer_lag", "Messages behind the end of each assigned input partition",
            ["topic", "partition"], registry=registry,
        ),
        partition_stalled=Gauge(
            "kpi_stream_partition_stalled_seconds", "Seconds since each assigned input partition last "
            "made progress while it had records to read (0 when caught up)",
            ["topic", "partition"], registry=registry,
        ),
        publish_latency=Histogram(
            "kpi_stream_publish_latency_seconds",
            "Per applied event: time from its input message's Kafka timestamp to the send of the publication "
            "round that took its changes (timestamps counted per 10 ms, the floor)",
            buckets=LATENCY_BUCKETS, registry=registry,
        ),
        stage_delay=Histogram(
            "kpi_stream_stage_delay_seconds",
            "The parts of publish latency. input: Kafka timestamp of an input message to its event being "
            "applied; partials: a partials message sent by an entity partition to its receipt by the scope "
            "stage; publication: the oldest partials received for a published scope to the publication",
            ["stage"], buckets=LATENCY_BUCKETS, registry=registry,
        ),
        gc_pause=Histogram(
            "kpi_stream_gc_pause_seconds", "Duration of each cyclic garbage collection, by generation: "
            "the event loop stands still meanwhile", ["generation"],
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0), registry=registry,
        ),
        backpressure=Counter(
            "kpi_stream_backpressure_seconds", "Seconds input agents waited because too many applied "
            "facts were not yet acknowledged by Kafka (the broker is slower than the input)", registry=registry,
        ),
        facts_unacknowledged=Gauge(
            "kpi_stream_facts_unacknowledged", "Facts applied to state and not yet acknowledged by Kafka "
            "(waiting for the next flush, or on their way); input waits while there are 5,000", registry=registry,
        ),
        state_entities=Gauge(
            "kpi_stream_state_entities", "Entities held in state (outlets, leads, reps, scopes)",
            ["kind"], registry=registry,
        ),
        partition_rebuilds=Counter(
            "kpi_stream_partition_rebuilds", "Engines built for assigned partitions, by family and source: "
            "`kept` (the engine held until the rebalance), `snapshot` (restored from a file) -- each then "
            "given the facts written since -- or `facts` (every stored fact applied)", ["family", "source"], registry=registry,
        ),
        rebuild_seconds=Histogram(
            "kpi_stream_rebuild_seconds", "Duration of each rebuild of a family's assigned partitions "
            "(snapshots read, facts applied); the event loop stands still meanwhile", ["family"],
            buckets=(0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0), registry=registry,
        ),
        background_snapshots=Counter(
            "kpi_stream_background_snapshots", "Background saves of every partition's engine "
            "(KPI_SNAPSHOT_INTERVAL), by outcome: `saved`, or `failed` (not started, failed, or stopped "
            "by a rebalance or a stop)", ["outcome"], registry=registry,
        ),
        background_snapshot_seconds=Histogram(
            "kpi_stream_background_snapshot_seconds", "Duration of each background snapshot save (in a "
            "forked copy of the worker: the worker goes on meanwhile)",
            buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0), registry=registry,
        ),
        last_publish=Gauge(
            "kpi_stream_last_publish_timestamp_seconds", "Unix time of the last KPI publication round "
            "that sent at least one update", registry=registry,
        ),
        updates_published=Counter(
            "kpi_stream_kpi_updates_published", "KPI update messages written to kpi.updates", registry=registry,
        ),
        redis_up=Gauge("kpi_stream_redis_up", "1 when Redis answered the last write or check", registry=registry),
        redis_backlog=Gauge("kpi_stream_redis_backlog", "Latest values waiting to be written to Redis "
                            "(at most one per key: bounded by the number of keys)", registry=registry),
        ready=Gauge("kpi_stream_ready", "1 when the worker has recovered state and is publishing", registry=registry),
    )


REP_TERRITORY_OUTLETS = "kpi_stream_rep_territory_outlets"


class RepTerritoryOutlets:
    """`kpi_stream_rep_territory_outlets{territory, rep}`: outlets currently in the territory and
    assigned to the rep (stream/core/assignments.py), summed over the outlet partitions this worker
    holds; `sum by (territory, rep)` over the workers gives the whole. Not a KPI: it tells a
    dashboard which reps serve a territory (the Reps dashboard's `$rep` follows `$territory`).

    A collector, read at each scrape from the engines held then (`counts` yields each one's
    counts): a partition revoked from this worker has no engine here, so its outlets leave this
    worker's series at once -- nothing to withdraw -- and a pair whose last outlet moved away has no
    series. Each scrape costs one pass over the pairs of each held partition, never over outlets."""

    def __init__(self, counts: Callable[[], Iterable[Mapping[tuple[str, str], int]]]) -> None:
        self.counts = counts

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            REP_TERRITORY_OUTLETS, "Outlets currently in the territory and assigned to the rep (their current "
            "attributes, unassigned when never set), in the entity partitions this worker holds; not a KPI",
            labels=["territory", "rep"])

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield self._family()  # the name, so that `/metrics?name[]=...` can ask for it alone

    def collect(self) -> Iterator[GaugeMetricFamily]:
        totals: dict[tuple[str, str], int] = {}
        for counts in self.counts():
            for pair, outlets in counts.items():
                totals[pair] = totals.get(pair, 0) + outlets
        family = self._family()
        for (territory, rep), outlets in sorted(totals.items()):
            family.add_metric([territory, rep], outlets)
        yield family


class MetricTally:
    """Per-event increments and observations held as plain numbers until `flush()` adds them to
    their Prometheus series (the worker flushes before every /metrics render and every
    publication tick, so a scrape never sees a stale count). prometheus_client's `inc()` and
    `observe()` take a lock each -- 0.6 and 1.4 us on the benchmark machine -- paid per input
    event otherwise.

    Histogram observations go straight into the child's bucket and sum values (`_buckets`,
    `_sum`, `_upper_bounds`: prometheus_client's internals as of 0.26;
    tests/unit/test_metric_tally.py checks the exposition against per-value `observe()`, so an
    upgrade that moves them fails there), as the library has no call to add many at once."""

    __slots__ = ("_counts", "_observed")

    def __init__(self) -> None:
        self._counts: dict[Any, int] = {}  # a labelled counter child -> increments not yet added
        self._observed: dict[Any, tuple[tuple[float, ...], list[int], list[float]]] = {}

    def count(self, child: Any) -> None:
        counts = self._counts
        counts[child] = counts.get(child, 0) + 1

    def observe(self, child: Any, value: float) -> None:
        self.observe_many(child, value, 1)

    def observe_many(self, child: Any, value: float, times: int) -> None:
        """`times` observations of `value` (events that waited the same time)."""
        observed = self._observed.get(child)
        if observed is None:
            observed = self._observed[child] = (tuple(child._upper_bounds), [0] * len(child._upper_bounds), [0.0])
        bounds, in_bucket, total = observed
        in_bucket[bisect_left(bounds, value)] += times  # the first bound >= value, as observe() picks
        total[0] += value * times

    def flush(self) -> None:
        for child, increment in self._counts.items():
            child.inc(increment)
        self._counts.clear()
        for child, (_bounds, in_bucket, total) in self._observed.items():
            if total[0] or any(in_bucket):
                child._sum.inc(total[0])
                for index, observations in enumerate(in_bucket):
                    if observations:
                        child._buckets[index].inc(observations)
                        in_bucket[index] = 0
                total[0] = 0.0
