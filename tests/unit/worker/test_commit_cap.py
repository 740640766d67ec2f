"""Commits of the agents' topics are capped at the offset ledger (stream/worker/app.py
`commit_only_applied_offsets`), against faust's own `Consumer._new_offset`: a capped commit must
not lose the acked offsets past the cap, or faust never commits that partition again (it stops
at a gap after the committed offset). End to end: tests/e2e/test_offsets_committed.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.structs import TopicPartition

from stream.kafka.offsets import Admission, OffsetLedger

pytestmark = pytest.mark.unit


def _faust_consumer_with_acked(committed: int, acked: list[int]):
    """A stand-in holding the state faust's Consumer._new_offset reads, with faust's own method."""
    from collections import defaultdict
    from types import MethodType

    from faust.transport.consumer import Consumer
    from intervaltree import IntervalTree

    tp = TopicPartition("t.sales.orders", 0)
    consumer = SimpleNamespace(_acked=defaultdict(list), _acked_index=defaultdict(set), _gap=defaultdict(IntervalTree),
                               _committed_offset=defaultdict(lambda: None), _add_gap=None)
    consumer._acked[tp] = list(acked)
    consumer._acked_index[tp] = set(acked)
    consumer._committed_offset[tp] = committed
    consumer._new_offset = MethodType(Consumer._new_offset, consumer)
    return consumer, tp


def test_a_commit_capped_by_the_ledger_keeps_faust_acked_offsets_for_the_next_commit():
    from stream.kafka.faust_internals import commit_only_applied_offsets

    consumer, tp = _faust_consumer_with_acked(100, list(range(100, 200)))
    ledger = OffsetLedger()
    ledger.start(tp, 100, persisted_later=True)
    for offset in range(100, 200):
        assert ledger.admit(tp, offset, 0.0)[0] is Admission.APPLY
    ledger.mark_durable(tp, 150)  # the facts of 150..199 are not written yet
    commit_only_applied_offsets(consumer, ledger, {tp.topic})
    assert consumer._new_offset(tp) == 150
    consumer._committed_offset[tp] = 150  # what faust's commit records
    ledger.mark_durable(tp, 200)
    assert consumer._new_offset(tp) == 200, "faust still knows 150..199 were acked"
