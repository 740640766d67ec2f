"""The mark committed with an input partition's offset is at or before every dead letter of its
records at or past that offset, so the next owner, reading back from the mark, finds every dead
letter it must not write again."""

from __future__ import annotations

import random

from stream.kafka.deadletters import DeadLetterMarks, decode_mark, deadletter_partition, encode_mark

TP = ("sales.orders", 3)
DLP = deadletter_partition(3, 8)


def test_a_mark_round_trips_through_commit_metadata_and_other_metadata_is_no_mark():
    assert decode_mark(encode_mark(1234)) == 1234
    assert decode_mark("") is None and decode_mark(None) is None
    assert decode_mark("someone-else") is None and decode_mark("kpi-deadletters@x") is None


def test_dead_letters_of_a_partition_go_to_the_same_numbered_dead_letter_partition():
    assert [deadletter_partition(p, 4) for p in range(6)] == [0, 1, 2, 3, 0, 1]


def test_read_back_dead_letters_are_not_written_again_and_others_are():
    marks = DeadLetterMarks()
    marks.start(TP, 40, {105: 41, 130: 44})
    assert marks.already_written(TP, 105) and marks.already_written(TP, 130)
    assert not marks.already_written(TP, 131)
    assert not marks.already_written(("sales.orders", 4), 105)  # a partition not started


def test_the_mark_is_the_first_pending_dead_letter_at_or_past_the_committed_offset():
    marks = DeadLetterMarks()
    marks.start(TP, 40, {105: 41})
    marks.note_acked(DLP, 49)  # this worker's other writes there reached position 49
    marks.note_sent(TP, 120, DLP)  # will land at 50 or later
    assert marks.mark(TP, 100, DLP) == 41  # the previous owner's dead letter of 105 is past 100
    assert marks.mark(TP, 110, DLP) == 50
    assert marks.mark(TP, 121, DLP) == 50  # none pending past 121: the end as this worker knows it


def test_a_mark_never_goes_back_before_the_position_read_from():
    marks = DeadLetterMarks()
    marks.start(TP, 70, {})
    assert marks.mark(TP, 0, DLP) == 70
    marks.note_acked(DLP, 10)  # an ack from before: the read-back position still bounds
    assert marks.mark(TP, 0, DLP) == 70


def test_an_unknown_partition_has_no_mark():
    assert DeadLetterMarks().mark(TP, 5, DLP) is None


def test_every_dead_letter_past_a_commit_lies_at_or_after_its_mark_in_random_runs():
    """Simulated owner: rejects records in offset order, its dead letters land in the partition
    after other writers' records, commits now and then; the mark of each commit bounds from below
    the position of every dead letter of a record at or past the committed offset, including those
    written after the commit."""
    rng = random.Random(38)
    for _ in range(200):
        marks = DeadLetterMarks()
        end = rng.randrange(0, 50)
        marks.start(TP, end, {})
        in_flight: list[tuple[int, int]] = []  # (source offset, queued)
        landed: dict[int, int] = {}  # source offset -> position
        commits: list[tuple[int, int]] = []
        for offset in range(rng.randrange(1, 80)):
            if rng.random() < 0.3:
                marks.note_sent(TP, offset, DLP)
                in_flight.append(offset)
            if rng.random() < 0.3:  # others write to the same dead-letter partition
                end += rng.randrange(1, 4)
            if in_flight and rng.random() < 0.4:  # a batch lands
                for source in in_flight:
                    landed[source] = end
                    end += 1
                marks.note_acked(DLP, end - 1)
                in_flight = []
            if rng.random() < 0.2:
                committed = rng.randrange(0, offset + 1)
                commits.append((committed, marks.mark(TP, committed, DLP)))
        for source in in_flight:
            landed[source] = end
            end += 1
        for committed, mark in commits:
            assert all(position >= mark for source, position in landed.items() if source >= committed)
