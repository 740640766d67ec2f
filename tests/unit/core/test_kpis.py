"""Evaluating a scope against the vector it was last evaluated from leaves out only values that
cannot have changed: publication (which sends the values that differ from the last published)
is the same as with a full evaluation."""

from __future__ import annotations

from hypothesis import given, strategies as st

from stream.core.catalogue import OutletLayout
from stream.core.config import KpiSettings
from stream.core.kpis import evaluate_outlet_scope
from stream.stages.updates import update_key

SETTINGS = KpiSettings.from_env({})
LAYOUT = OutletLayout.build(SETTINGS)
SCOPE = ("territory", "t-7")

vectors = st.lists(st.integers(min_value=0, max_value=5), min_size=LAYOUT.size, max_size=LAYOUT.size)
# which slots an event moved: none, a few, or many
moves = st.lists(st.tuples(st.integers(min_value=0, max_value=LAYOUT.size - 1), st.integers(min_value=1, max_value=3)),
                 max_size=LAYOUT.size)


def _by_key(values) -> dict:
    return {update_key(v): v for v in values}


@given(vectors, moves)
def test_partial_evaluation_holds_every_value_that_moved_and_only_values_of_the_full_evaluation(before, moved):
    after = list(before)
    for slot, delta in moved:
        after[slot] += delta
    full_before = _by_key(evaluate_outlet_scope(before, SCOPE, SETTINGS, LAYOUT))
    full_after = _by_key(evaluate_outlet_scope(after, SCOPE, SETTINGS, LAYOUT))
    partial = _by_key(evaluate_outlet_scope(after, SCOPE, SETTINGS, LAYOUT, previous=before))

    changed = {key for key, value in full_after.items() if full_before[key] != value}
    assert changed <= partial.keys()
    assert all(full_after[key] == value for key, value in partial.items())


def test_an_unchanged_vector_evaluates_to_nothing_and_a_first_evaluation_to_everything():
    vector = list(range(LAYOUT.size))
    assert evaluate_outlet_scope(vector, SCOPE, SETTINGS, LAYOUT, previous=list(vector)) == []
    assert evaluate_outlet_scope(vector, SCOPE, SETTINGS, LAYOUT, previous=None) == \
        evaluate_outlet_scope(vector, SCOPE, SETTINGS, LAYOUT)


def test_a_visit_moves_only_the_visit_values_of_the_windows_it_falls_in():
    before = [0] * LAYOUT.size
    after = list(before)
    for i in range(len(SETTINGS.window_labels)):
        after[LAYOUT.visits[i]] += 1
    kpis = {v.kpi for v in evaluate_outlet_scope(after, SCOPE, SETTINGS, LAYOUT, previous=before)}
    assert kpis == {"visits", "productive_visits", "visit_to_order_ratio"}
