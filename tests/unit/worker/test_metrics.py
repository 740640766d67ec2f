"""MetricTally against prometheus_client itself: after a flush, the exposition of tallied series
equals that of series given every increment and observation one by one."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from stream.worker.metrics import LATENCY_BUCKETS, MetricTally


def _series(registry: CollectorRegistry):
    counter = Counter("kpi_test_events", "events", ["type"], registry=registry)
    histogram = Histogram("kpi_test_delay_seconds", "delay", ["stage"], buckets=LATENCY_BUCKETS, registry=registry)
    return counter, histogram


def _samples(registry: CollectorRegistry) -> dict:
    # created timestamps differ between two registries built a moment apart; a sum added in
    # another order may differ in its last bits
    return {(sample.name, tuple(sorted(sample.labels.items()))):
            pytest.approx(sample.value, rel=1e-12) if sample.name.endswith("_sum") else sample.value
            for family in registry.collect() for sample in family.samples if not sample.name.endswith("_created")}


def test_tallied_counts_and_observations_expose_what_one_by_one_calls_expose():
    rng = random.Random(11)
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    (d_counter, d_histogram), (t_counter, t_histogram) = _series(direct), _series(tallied)
    tally = MetricTally()
    # every bucket bound itself, values between them, zero and beyond the last bound
    values = [*LATENCY_BUCKETS, 0.0, 61.0, 1e9] + [rng.uniform(0, 70) for _ in range(2_000)]
    for round_ in range(3):  # flushes in between: what was added once is not added again
        for value in values:
            kind = rng.choice(["order.placed", "visit.completed"])
            stage = rng.choice(["input", "partials"])
            d_counter.labels(kind).inc()
            tally.count(t_counter.labels(kind))
            d_histogram.labels(stage).observe(value)
            tally.observe(t_histogram.labels(stage), value)
        tally.flush()
        assert _samples(tallied) == _samples(direct), f"after round {round_}"
    tally.flush()  # nothing pending: changes nothing
    assert _samples(tallied) == _samples(direct)


def test_nothing_reaches_the_series_before_a_flush():
    registry = CollectorRegistry()
    counter, histogram = _series(registry)
    tally = MetricTally()
    tally.count(counter.labels("order.placed"))
    tally.observe(histogram.labels("input"), 0.2)
    assert registry.get_sample_value("kpi_test_events_total", {"type": "order.placed"}) == 0
    assert registry.get_sample_value("kpi_test_delay_seconds_count", {"stage": "input"}) == 0
    tally.flush()
    assert registry.get_sample_value("kpi_test_events_total", {"type": "order.placed"}) == 1
    assert registry.get_sample_value("kpi_test_delay_seconds_bucket", {"stage": "input", "le": "0.2"}) == 1
    assert registry.get_sample_value("kpi_test_delay_seconds_bucket", {"stage": "input", "le": "0.1"}) == 0


def test_many_observations_of_one_value_expose_what_that_many_single_observations_expose():
    rng = random.Random(12)
    direct, tallied = CollectorRegistry(), CollectorRegistry()
    (_, d_histogram), (_, t_histogram) = _series(direct), _series(tallied)
    tally = MetricTally()
    for value in [*LATENCY_BUCKETS, 0.0, 61.0] + [rng.uniform(0, 70) for _ in range(300)]:
        times = rng.randint(1, 40)
        for _ in range(times):
            d_histogram.labels("publication").observe(value)
        tally.observe_many(t_histogram.labels("publication"), value, times)
    tally.flush()
    assert _samples(tallied) == _samples(direct)
