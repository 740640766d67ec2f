"""Window arithmetic: the slot-delta structures against brute force."""

from __future__ import annotations

from hypothesis import given, strategies as st

from stream.windows import DeltaLedger, SlotUnion, slot_of


def test_slot_of_floors_before_the_epoch_too():
    assert slot_of(59_999_999, 60_000_000) == 0
    assert slot_of(60_000_000, 60_000_000) == 1
    assert slot_of(-1, 60_000_000) == -1


def test_delta_for_a_later_slot_waits_until_the_clock_reaches_it():
    ledger = DeltaLedger(1, slot=10)
    ledger.add(("global", "all"), 12, 0, 5)
    assert ledger.values.get(("global", "all")) is None
    ledger.advance(11)
    assert ledger.values.get(("global", "all")) is None
    ledger.advance(12)
    assert ledger.values[("global", "all")] == [5]
    assert ledger.take_dirty() == {("global", "all")}


def test_delta_for_a_past_slot_applies_at_once():
    ledger = DeltaLedger(2, slot=10)
    ledger.add(("rep", "r1"), -500, 1, 3)
    assert ledger.values[("rep", "r1")] == [0, 3]


@given(
    operations=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=40),
    windows=st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
)
def test_slot_union_coverage_equals_brute_force_at_every_slot(operations, windows):
    union = SlotUnion()
    held: list[int] = []
    deltas: list[dict[int, int]] = [dict() for _ in windows]

    def emit(w_index: int, slot: int, delta: int) -> None:
        deltas[w_index][slot] = deltas[w_index].get(slot, 0) + delta

    for is_add, slot in operations:
        if is_add or slot not in held:
            union.add(slot, windows, emit)
            held.append(slot)
        else:
            union.remove(slot, windows, emit)
            held.remove(slot)
    for w_index, width in enumerate(windows):
        running = 0
        for s in range(-2, 50):
            running += deltas[w_index].get(s, 0)
            expected = int(any(s - width < x <= s for x in held))
            assert running == expected, (s, width, held)
