"""The scope stage's publication (stream/stages/publication.py): the bytes it sends are the readable
message's (stream/stages/updates.py), a key goes out again only when its numbers move, and a scope
handed to another worker leaves no gauge or memory behind."""

from __future__ import annotations

import gc
import tracemalloc

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from stream.stages.outgoing import key_partition
from stream.core.kpis import KpiValue
from stream.stages.publication import Publisher, RoundOutput
from stream.worker.sinks import KpiGauges
from stream.stages.updates import cloudevent_headers, encode, round_stamp, update_key, update_message

AS_OF_US = 1_795_418_100_000_000
EXPORTED = ("global", "region", "territory")

ids = st.text(min_size=1, max_size=12)  # any text: quotes, backslashes, '|', '%', non-ASCII, controls
numbers = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                    st.floats(allow_nan=False, allow_infinity=False))
# (kpi, window, horizon, kind) as the catalogue has them: a horizon only on first_order_conversion,
# a kind only on activities, no window on open_leads
identities = st.one_of(
    st.tuples(st.just("active_accounts"), st.sampled_from(("7d", "30d", "60d")), st.none(), st.none()),
    st.tuples(st.just("first_order_conversion"), st.sampled_from(("7d", "30d")), st.sampled_from(("30d", "60d")), st.none()),
    st.tuples(st.just("activities"), st.sampled_from(("7d", "60d")), st.none(), st.sampled_from(("call", "all"))),
    st.tuples(st.just("open_leads"), st.none(), st.none(), st.none()),
)
values = st.builds(
    lambda identity, scope, scope_id, value, numerator, denominator: KpiValue(
        identity[0], identity[1], scope, scope_id, value, numerator, denominator, identity[2], identity[3]),
    identities, st.sampled_from(("global", "territory", "rep")), ids, numbers, numbers, numbers,
)


def publisher() -> tuple[Publisher, CollectorRegistry]:
    registry = CollectorRegistry()
    return Publisher(KpiGauges(registry, EXPORTED)), registry


def round_output(as_of_us: int = AS_OF_US, computed_at_us: int = AS_OF_US + 412_000, partitions: int = 4) -> RoundOutput:
    return RoundOutput(round_stamp(as_of_us, computed_at_us, "/kpi-stream/app"), partitions)


@settings(max_examples=300, deadline=None)
@given(value=values, as_of_us=st.integers(min_value=0, max_value=2**52), partitions=st.integers(1, 12))
def test_a_published_update_is_byte_for_byte_the_readable_message_with_its_headers(value, as_of_us, partitions):
    pub, _ = publisher()
    out = round_output(as_of_us, as_of_us + 1_234, partitions)
    assert pub.publish(("outlet", value.scope, value.scope_id), [value], out) == 1
    [message] = out.outgoing
    key = update_key(value)
    assert message.key == key.encode()
    assert message.value == encode(update_message(value, out.stamp))
    assert list(message.headers) == cloudevent_headers(key, out.stamp)
    assert message.partition == key_partition(key.encode(), partitions)
    assert out.redis == {key: message.value} and pub.latest_bodies == {key: message.value}


def test_a_key_is_published_again_only_when_its_value_numerator_or_denominator_moves():
    pub, _ = publisher()
    scope = ("outlet", "rep", "r1")
    first = [KpiValue("orders", "7d", "rep", "r1", 3), KpiValue("visits", "7d", "rep", "r1", 5),
             KpiValue("lines_per_order", "7d", "rep", "r1", 2.0, 6, 3)]
    assert pub.publish(scope, first, round_output()) == 3
    assert pub.publish(scope, first, round_output(AS_OF_US + 1_000_000)) == 0  # as_of alone moves nothing
    moved = [first[0], first[1]._replace(value=6), first[2]._replace(numerator=8, denominator=4)]  # 2.0 again
    out = round_output()
    assert pub.publish(scope, moved, out) == 2
    assert [orjson.loads(m.value)["kpi"] for m in out.outgoing] == ["visits", "lines_per_order"]


def test_values_of_exported_scope_types_set_gauges_and_others_do_not():
    pub, registry = publisher()
    pub.publish(("outlet", "territory", "JKT-01"), [KpiValue("orders", "7d", "territory", "JKT-01", 4)], round_output())
    pub.publish(("outlet", "rep", "r1"), [KpiValue("orders", "7d", "rep", "r1", 9)], round_output())
    assert registry.get_sample_value("kpi_orders", {"window": "7d", "scope": "territory", "scope_id": "JKT-01"}) == 4
    assert registry.get_sample_value("kpi_orders", {"window": "7d", "scope": "rep", "scope_id": "r1"}) is None


def test_a_withdrawn_scope_loses_its_gauges_and_bodies_and_is_sent_whole_if_it_comes_back():
    pub, registry = publisher()
    scope = ("outlet", "territory", "JKT-01")
    scope_values = [KpiValue("orders", "30d", "territory", "JKT-01", 4),
                    KpiValue("first_order_conversion", "30d", "territory", "JKT-01", 0.5, 1, 2, horizon="30d")]
    other = ("outlet", "territory", "BDG-02")
    pub.publish(scope, scope_values, round_output())
    pub.publish(other, [KpiValue("orders", "30d", "territory", "BDG-02", 7)], round_output())
    pub.withdraw(scope)
    labels = {"window": "30d", "scope": "territory", "scope_id": "JKT-01"}
    assert registry.get_sample_value("kpi_orders", labels) is None
    assert registry.get_sample_value("kpi_first_order_conversion", {**labels, "horizon": "30d"}) is None
    assert registry.get_sample_value("kpi_orders", {**labels, "scope_id": "BDG-02"}) == 7
    assert list(pub.latest_bodies) == ["orders|30d|territory|BDG-02"]
    assert pub.publish(scope, scope_values, round_output()) == 2  # nothing remembered: all of it again


def test_what_the_publisher_keeps_per_key_stays_out_of_the_collectors_walk_as_values_move():
    pub, _ = publisher()

    def publish_round(offset: int) -> None:
        for rep in range(50):
            scope = ("outlet", "rep", f"r{rep}")
            pub.publish(scope, [KpiValue("orders", "7d", "rep", f"r{rep}", rep + offset),
                                KpiValue("lines_per_order", "7d", "rep", f"r{rep}", 1.5, 3 + offset, 2)], round_output())

    publish_round(0)
    gc.collect()
    publish_round(1)  # every value moved: fresh entries, no collection since
    assert not gc.is_tracked(pub.last) and not gc.is_tracked(pub.latest_bodies)
    gc.collect()
    assert not any(gc.is_tracked(form) for forms in pub.forms.values() for form in forms.values())


def test_what_the_publisher_keeps_per_key_is_about_the_size_of_its_bytes():
    """Its memory of the numbers it sent and the latest bodies must not hold orjson's ~4 KB output
    buffers (stream/core/jsonbytes.py): a field force has ~200,000 keys."""
    pub, _ = publisher()
    values = [KpiValue(kpi, window, "rep", f"rep-{rep}", rep * 1.5, rep, 7)
              for rep in range(300) for kpi in ("orders", "visits") for window in ("7d", "30d", "60d")]
    tracemalloc.start()
    try:
        for value in values:
            pub.publish(("outlet", "rep", value.scope_id), [value], round_output())
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(pub.last) == len(values)
    assert held / len(values) < 2_000, f"{held / len(values):.0f} bytes per key"
