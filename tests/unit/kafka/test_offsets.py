"""The offset ledger applies each partition's offsets strictly in order (stream/kafka/offsets.py)."""

from stream.kafka.offsets import Admission, OffsetLedger

TP = ("sales.visits", 3)


def test_offsets_from_the_committed_one_onwards_are_applied_in_order():
    ledger = OffsetLedger()
    ledger.start(TP, 155)
    assert [ledger.admit(TP, o, 0.0)[0] for o in (155, 156, 157)] == [Admission.APPLY] * 3
    assert ledger.commit_limit(TP) == 158


def test_a_batch_starting_past_the_committed_offset_is_skipped_and_the_hole_re_read():
    ledger = OffsetLedger()
    ledger.start(TP, 155)
    assert ledger.admit(TP, 492, 100.0) == (Admission.PROBE, 155)
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


def test_a_hole_the_log_confirms_as_a_gap_is_skipped_and_nothing_before_it_is_committed_until_then():
    ledger = OffsetLedger(retry_after=3.0)
    ledger.start(TP, 10)
    assert ledger.admit(TP, 12, 0.0) == (Admission.PROBE, 10)
    assert ledger.commit_limit(TP) == 10  # probing alone accepts nothing
    ledger.skip_to(TP, 12)  # the log's first record at or after 10 is 12
    assert ledger.admit(TP, 12, 0.1)[0] is Admission.APPLY
    assert ledger.commit_limit(TP) == 13


def test_a_hole_that_stays_open_after_a_seek_is_probed_again_after_the_retry_interval():
    ledger = OffsetLedger(retry_after=3.0)
    ledger.start(TP, 10)
    assert ledger.admit(TP, 40, 0.0)[0] is Admission.PROBE  # the record is there: worker seeks
    assert ledger.admit(TP, 41, 1.0)[0] is Admission.WAIT  # older fetch still being delivered
    assert ledger.admit(TP, 42, 3.5)[0] is Admission.PROBE
    assert ledger.commit_limit(TP) == 10


def test_a_revoked_partition_is_forgotten_and_restarts_from_its_new_committed_offset():
    ledger = OffsetLedger()
    ledger.start(TP, 0)
    ledger.admit(TP, 0, 0.0)
    ledger.forget([TP])
    assert not ledger.known(TP) and ledger.commit_limit(TP) is None
    ledger.start(TP, 40)
    assert ledger.admit(TP, 40, 0.0)[0] is Admission.APPLY


def test_offsets_of_events_persisted_later_are_committed_only_once_marked_durable():
    ledger = OffsetLedger()
    ledger.start(TP, 100, persisted_later=True)
    for offset in range(100, 110):
        ledger.admit(TP, offset, 0.0)
    assert ledger.commit_limit(TP) == 100
    ledger.mark_durable(TP, 105)
    assert ledger.commit_limit(TP) == 105
    ledger.mark_durable(TP, 200)  # never past what was applied
    assert ledger.commit_limit(TP) == 110


def test_the_cheap_next_offset_check_admits_only_the_next_offset_of_a_started_partition():
    ledger = OffsetLedger()
    assert ledger.admit_next(TP, 0) is False  # not started: the full admission decides
    ledger.start(TP, 155)
    assert ledger.admit_next(TP, 155) is True
    assert ledger.admit_next(TP, 155) is False  # a repeat is not "next"
    assert ledger.admit_next(TP, 200) is False  # nor is a hole
    assert ledger.admit(TP, 156, 0.0)[0] is Admission.APPLY  # the two agree on the cursor
    assert ledger.commit_limit(TP) == 157


def test_records_fetched_before_a_seek_back_cannot_hide_the_re_read_from_faust():
    """faust delivers a record only at or past its per-partition read mark and moves the mark
    after each delivery; with the mark taken from the ledger, a stale record delivered after the
    seek back does not make faust drop the re-read range (stream/kafka/faust_internals.py LedgerReadOffsets)."""
    from collections import defaultdict

    from faust.types import TP as FaustTP

    from stream.kafka.faust_internals import LedgerReadOffsets

    tp = FaustTP("sales.orders", 1)
    ledger = OffsetLedger()
    ledger.start(tp, 0)
    marks = LedgerReadOffsets(ledger, {"sales.orders"}, defaultdict(lambda: None))
    applied: list[int] = []

    def faust_delivers(offset: int) -> None:  # faust 0.15.3 Consumer._drain_messages, reduced
        mark = marks[tp]
        if mark is None or offset >= mark:
            if ledger.admit(tp, offset, 0.0)[0] is Admission.APPLY:
                applied.append(offset)
            marks[tp] = offset

    for offset in (0, 1, 2, 3, 4, 233, 234):  # 5..232 skipped by faust: the ledger seeks back to 5
        faust_delivers(offset)
    for offset in range(5, 235):  # the re-read
        faust_delivers(offset)
    assert applied == list(range(0, 235))
    assert marks[FaustTP("kpi.partials", 0)] is None, "other topics keep faust's own mark"
