"""KPI gauges: a series withdrawn (null ratio, scope moved away) and set again is exported again,
although the labelled series are cached between publications."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from stream.core.kpis import KpiValue
from stream.worker.sinks import KpiGauges


def _exported(registry: CollectorRegistry) -> set[str]:
    return {line for line in generate_latest(registry).decode().splitlines()
            if line.startswith("kpi_visit_to_order_ratio{")}


def test_a_ratio_that_goes_null_and_back_is_withdrawn_then_exported_with_its_new_value():
    registry = CollectorRegistry()
    gauges = KpiGauges(registry, ("territory",))
    ratio = KpiValue("visit_to_order_ratio", "30d", "territory", "T-1", 0.5, 1, 2)

    gauges.set(ratio)
    assert _exported(registry) == {'kpi_visit_to_order_ratio{scope="territory",scope_id="T-1",window="30d"} 0.5'}
    gauges.set(ratio._replace(value=None, numerator=0, denominator=0))
    assert _exported(registry) == set()
    gauges.set(ratio._replace(value=0.25, numerator=1, denominator=4))
    assert _exported(registry) == {'kpi_visit_to_order_ratio{scope="territory",scope_id="T-1",window="30d"} 0.25'}


def test_a_withdrawn_scope_comes_back_when_published_again_and_other_scope_types_are_never_exported():
    registry = CollectorRegistry()
    gauges = KpiGauges(registry, ("territory",))
    ratio = KpiValue("visit_to_order_ratio", "30d", "territory", "T-1", 0.5, 1, 2)
    gauges.set(ratio)
    gauges.remove(ratio)  # its partition moved to another worker
    gauges.set(ratio._replace(scope="rep", scope_id="r-1"))
    assert _exported(registry) == set()
    gauges.set(ratio)
    assert len(_exported(registry)) == 1
