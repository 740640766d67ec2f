"""The offset ledger applies each partition's offsets strictly in order (stream/offsets.py)."""

from stream.offsets import Admission, OffsetLedger

TP = ("sales.visits", 3)


def test_offsets_from_the_committed_one_onwards_are_applied_in_order():
    ledger = OffsetLedger()
    ledger.start(TP, 155)
    assert [ledger.admit(TP, o, 0.0)[0] for o in (155, 156, 157)] == [Admission.APPLY] * 3
    assert ledger.commit_limit(TP) == 158


def test_a_batch_starting_past_the_committed_offset_is_skipped_and_the_hole_re_read():
    ledger = OffsetLedger()
    ledger.start(TP, 155)
    assert ledger.admit(TP, 492, 100.0) == (Admission.SEEK, 155)
    assert ledger.admit(TP, 493, 100.1) == (Admission.WAIT, 155)
    assert ledger.commit_limit(TP) == 155  # nothing past the hole may be committed
    assert ledger.admit(TP, 155, 100.2)[0] is Admission.APPLY
    assert ledger.commit_limit(TP) == 156


def test_offsets_read_again_after_a_seek_are_not_applied_twice():
    ledger = OffsetLedger()
    ledger.start(TP, 0)
    for offset in range(5):
        ledger.admit(TP, offset, 0.0)
    assert ledger.admit(TP, 2, 0.0)[0] is Admission.REPEAT
    assert ledger.commit_limit(TP) == 5


def test_a_hole_that_re_reading_does_not_fill_is_accepted_as_a_gap_after_the_configured_seeks():
    ledger = OffsetLedger(max_seeks=2, accept_after=3.0)
    ledger.start(TP, 10)
    assert ledger.admit(TP, 12, 0.0)[0] is Admission.SEEK
    assert ledger.admit(TP, 12, 1.0)[0] is Admission.WAIT
    assert ledger.admit(TP, 12, 3.5)[0] is Admission.SEEK
    assert ledger.admit(TP, 12, 7.0) == (Admission.GAP, 10)
    assert ledger.commit_limit(TP) == 13
    assert ledger.admit(TP, 13, 7.1)[0] is Admission.APPLY


def test_a_revoked_partition_is_forgotten_and_restarts_from_its_new_committed_offset():
    ledger = OffsetLedger()
    ledger.start(TP, 0)
    ledger.admit(TP, 0, 0.0)
    ledger.forget([TP])
    assert not ledger.known(TP) and ledger.commit_limit(TP) is None
    ledger.start(TP, 40)
    assert ledger.admit(TP, 40, 0.0)[0] is Admission.APPLY
