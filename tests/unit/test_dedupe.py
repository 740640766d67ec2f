"""Duplicate detection (spec 4): one key per (family, entity, event_id), whatever the ids hold."""

from hypothesis import given, strategies as st

from stream.engine import Deduper, Family

HOUR_US = 3_600_000_000


@given(st.tuples(st.text(), st.text()), st.tuples(st.text(), st.text()))
def test_distinct_entity_and_event_id_pairs_never_share_a_key(first, second):
    if first != second:
        assert Deduper.key(Family.OUTLET, *first) != Deduper.key(Family.OUTLET, *second)


def test_an_id_split_differently_between_entity_and_event_is_not_a_duplicate():
    deduper = Deduper(horizon_us=HOUR_US)
    assert deduper.admit(Family.OUTLET, "OUT-1", "2:x", ref_us=0)
    assert not deduper.is_duplicate(Family.OUTLET, "OUT-12", ":x", ref_us=0)
    assert not deduper.is_duplicate(Family.LEAD, "OUT-1", "2:x", ref_us=0)
    assert deduper.is_duplicate(Family.OUTLET, "OUT-1", "2:x", ref_us=HOUR_US)
    assert not deduper.is_duplicate(Family.OUTLET, "OUT-1", "2:x", ref_us=HOUR_US + 1)


def test_admit_takes_the_first_copy_and_refuses_a_repeat_inside_the_horizon():
    deduper = Deduper(horizon_us=HOUR_US)
    assert deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=0)
    assert not deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=HOUR_US)
    assert deduper.is_duplicate(Family.OUTLET, "OUT-1", "e-1", ref_us=HOUR_US)
    assert deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=HOUR_US + 1)  # past the horizon: a new event
