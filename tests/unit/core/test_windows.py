"""Window arithmetic: the slot-delta structures against brute force."""

from __future__ import annotations

import gc
from decimal import Decimal

from hypothesis import given, strategies as st

from stream.core.windows import DeltaLedger, ScopeRollup, SlotUnion, slot_of


def test_slot_of_floors_before_the_epoch_too():
    assert slot_of(59_999_999, 60_000_000) == 0
    assert slot_of(60_000_000, 60_000_000) == 1
    assert slot_of(-1, 60_000_000) == -1


def test_delta_for_a_later_slot_waits_until_the_clock_reaches_it():
    ledger = DeltaLedger(1, slot=10)
    ledger.add(("global", "all"), 12, 0, 5)
    assert ledger.take_changes() == {}
    ledger.advance(11)
    assert ledger.take_changes() == {}
    ledger.advance(12)
    assert ledger.take_changes() == {("global", "all"): {0: 5}}
    assert ledger.take_changes() == {}, "each delta is handed over once"


def test_delta_for_a_past_slot_applies_at_once():
    ledger = DeltaLedger(2, slot=10)
    ledger.add(("rep", "r1"), -500, 1, 3)
    assert ledger.take_changes() == {("rep", "r1"): {1: 3}}


def test_pending_deltas_are_invisible_to_the_cyclic_gc():
    """A full collection walks every tracked object; the pending deltas of a large state must
    not be among them (bench/gc_pause.py)."""
    ledger = DeltaLedger(34, slot=10)
    ledger.add_all(("r", "t", "d", "c", "rep"), [(20, 3, 1), (20, 7, Decimal("9.50")), (20, 8, Decimal("0.125"))])
    ledger.add_all(("r", "t", "d", "c", "rep"), [(5, 3, 1)])
    gc.collect()
    assert ledger.scheduled and ledger.scheduled_other
    assert not gc.is_tracked(ledger.scheduled)  # bytes only: not even walked for its entries
    for waiting in (ledger.scheduled, ledger.scheduled_other):
        assert not any(gc.is_tracked(by_slot) for by_slot in waiting.values())
    assert not any(gc.is_tracked(change) for change in ledger.take_changes().values())


def test_deltas_past_64_bits_or_finer_than_cents_wait_beside_the_packed_ones_and_arrive_exact():
    ledger = DeltaLedger(4, slot=10)
    huge = 2**64 - 1  # the largest integer an event's JSON can carry
    ledger.add_all(("rep", "r1"), [(12, 0, huge), (12, 0, 1), (12, 1, -huge), (12, 2, Decimal("0.10")),
                                   (12, 3, Decimal("0.005"))])
    ledger.add_all(("rep", "r1"), [(12, 0, huge), (12, 2, Decimal("-12.5")), (12, 3, Decimal("1E+3"))])
    assert ledger.waiting() == {12: {(("rep", "r1"), 0): 2 * huge + 1, (("rep", "r1"), 1): -huge,
                                     (("rep", "r1"), 2): Decimal("-12.40"), (("rep", "r1"), 3): Decimal("1000.005")}}
    assert ledger.scheduled_other == {12: {0: 2 * huge, 1: -huge, 3: Decimal("0.005")}}, \
        "an int64 and whole cents wait packed"
    assert ledger.pending_count() == 1, "one slot, one scope"
    ledger.advance(12)
    assert ledger.take_changes() == {("rep", "r1"): {0: 2 * huge + 1, 1: -huge, 2: Decimal("-12.40"),
                                                     3: Decimal("1000.005")}}
    assert ledger.waiting() == {} and not ledger.scheduled and not ledger.scheduled_other


def test_rollup_sums_cells_into_their_scopes_and_reports_a_new_cell_even_at_zero():
    ledger = DeltaLedger(2, slot=10)
    rollup = ScopeRollup(ledger, lambda cell: (("global", "all"), ("rep", cell[0])))
    ledger.add(("r1",), 10, 0, 2)
    ledger.add(("r2",), 11, 1, 5)
    assert rollup.take_dirty() == {("global", "all"), ("rep", "r1")}
    assert rollup.values == {("global", "all"): (2, 0), ("rep", "r1"): (2, 0)}
    ledger.advance(11)
    ledger.add(("r1",), 11, 0, -2)
    ledger.add(("r3",), 11, 0, 4)
    ledger.add(("r3",), 11, 0, -4)
    assert rollup.take_dirty() == {("global", "all"), ("rep", "r1"), ("rep", "r2"), ("rep", "r3")}
    assert rollup.values[("global", "all")] == (0, 5)
    assert rollup.values[("rep", "r3")] == (0, 0)
    ledger.add(("r3",), 11, 0, 1)
    ledger.add(("r3",), 11, 0, -1)
    assert rollup.take_dirty() == set(), "a known cell that nets to zero changes no scope"



def test_rollup_vectors_drop_out_of_the_collectors_walk_between_flushes():
    ledger = DeltaLedger(3, slot=10)
    rollup = ScopeRollup(ledger, lambda cell: (("global", "all"), ("rep", cell[0])))
    ledger.add_all(("r1",), [(10, 0, 1), (10, 2, Decimal("9.50"))])
    rollup.take_dirty()
    ledger.add_all(("r1",), [(10, 1, 4)])
    rollup.take_dirty()
    gc.collect()
    assert rollup.values[("rep", "r1")] == (1, 4, Decimal("9.50"))
    assert not any(gc.is_tracked(vector) for vector in rollup.values.values())

@given(
    operations=st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=40),
    windows=st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
)
def test_slot_union_coverage_equals_brute_force_at_every_slot(operations, windows):
    union = SlotUnion()
    held: list[int] = []
    deltas: list[dict[int, int]] = [dict() for _ in windows]

    fields = tuple(range(len(windows)))  # window i reports under field i
    out: list[tuple[int, int, int]] = []
    for is_add, slot in operations:
        if is_add or slot not in held:
            union.add(slot, windows, fields, out)
            held.append(slot)
        else:
            union.remove(slot, windows, fields, out)
            held.remove(slot)
    for slot, field, delta in out:
        deltas[field][slot] = deltas[field].get(slot, 0) + delta
    for w_index, width in enumerate(windows):
        running = 0
        for s in range(-2, 50):
            running += deltas[w_index].get(s, 0)
            expected = int(any(s - width < x <= s for x in held))
            assert running == expected, (s, width, held)


@given(
    operations=st.lists(st.integers(0, 30), max_size=20),
    windows=st.lists(st.integers(1, 12), min_size=1, max_size=3).map(tuple),
)
def test_withdrawing_a_whole_slot_union_cancels_every_delta_it_emitted(operations, windows):
    union = SlotUnion()
    fields = tuple(range(len(windows)))
    out: list[tuple[int, int, int]] = []
    for slot in operations:
        union.add(slot, windows, fields, out)
    union.emit_all(windows, fields, -1, out)
    net: dict[tuple[int, int], int] = {}
    for slot, field, delta in out:
        net[(slot, field)] = net.get((slot, field), 0) + delta
    assert all(delta == 0 for delta in net.values()), net



deltas = st.lists(st.tuples(st.integers(0, 20), st.integers(0, 3),
                            st.one_of(st.integers(-3, 3), st.sampled_from([Decimal("2.50"), Decimal("-0.10")]),
                                      # those that wait unpacked: finer than cents, past int64
                                      st.sampled_from([Decimal("0.125"), 2**63, -(2**63)]))),
                  max_size=25)


@given(before=deltas, moved=deltas, current=st.integers(0, 20), later=st.integers(0, 25),
       cells=st.sampled_from([(("c", "a"), ("c", "b")), (("c", "b"), ("c", "a")), (("c", "a"), ("c", "new"))]))
def test_moving_deltas_between_cells_leaves_the_ledger_as_withdrawing_and_adding_them_would(
        before, moved, current, later, cells):
    source, target = cells
    by_hand, moving = DeltaLedger(4, current), DeltaLedger(4, current)
    for ledger in (by_hand, moving):
        ledger.add_all(("c", "a"), before)
        ledger.add_all(("c", "b"), before[::2])
    by_hand.add_all(source, [(slot, field, -delta) for slot, field, delta in moved])
    by_hand.add_all(target, moved)
    moving.move_all(source, target, moved)

    def state(ledger: DeltaLedger) -> tuple:
        return ledger.changes, ledger.waiting()

    assert state(moving) == state(by_hand)  # touched cells included: a zero sum is an entry
    assert list(moving.take_changes()) == list(by_hand.take_changes())  # and in the same order
    by_hand.advance(later)
    moving.advance(later)
    assert moving.take_changes() == by_hand.take_changes()
