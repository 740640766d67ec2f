"""Duplicate detection (spec 4): one key per (family, entity, event_id), whatever the ids hold."""

from hypothesis import given, strategies as st

from stream.core.engine import Deduper, Family

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


def test_a_copy_past_the_horizon_is_a_new_event_and_a_repeat_of_the_older_copy_stays_a_duplicate():
    deduper = Deduper(horizon_us=HOUR_US)
    assert deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=0)
    assert deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=3 * HOUR_US)  # past the horizon: new
    # the first copy read again, and a copy within the horizon of the first (not of the latest)
    assert not deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=0)
    assert not deduper.admit(Family.OUTLET, "OUT-1", "e-1", ref_us=-HOUR_US // 2)
    assert deduper.is_duplicate(Family.OUTLET, "OUT-1", "e-1", ref_us=HOUR_US // 2)
    deduper.forget_before(2 * HOUR_US)  # the latest copy stays, the earlier one goes
    assert len(deduper.seen) == 1 and deduper.earlier == {}
    deduper.forget_before(4 * HOUR_US)
    assert deduper.seen == {}


def test_while_remembering_everything_nothing_is_forgotten_and_at_the_end_what_is_past_the_horizon_goes():
    deduper = Deduper(horizon_us=HOUR_US)
    deduper._sweep_at = 1  # forget at every admit
    count = (1 << 16) + 10  # past the usual sweep point of an empty deduper
    with deduper.remembering_everything():
        for n in range(count):
            assert deduper.admit(Family.OUTLET, "OUT-1", f"e-{n}", ref_us=n)
        assert deduper.admit(Family.OUTLET, "OUT-1", "newest", ref_us=count + 2 * HOUR_US)
        assert len(deduper.seen) == count + 1
    assert list(deduper.seen) == [Deduper.key(Family.OUTLET, "OUT-1", "newest")]
    # a rebuild that added little leaves the sweep to the usual doubling
    with deduper.remembering_everything():
        assert deduper.admit(Family.OUTLET, "OUT-1", "old", ref_us=0)
    assert len(deduper.seen) == 2
