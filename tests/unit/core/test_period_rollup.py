"""A rebuilt engine sends every period sum the engine it replaces could have sent
(stream/core/periods.py `PeriodRollup.flush`): a scope's period touched by contributions that net to
zero before the first flush is still kept, as zeros, so the scope stage replaces the previous
owner's sums for it instead of keeping them."""

from __future__ import annotations

import orjson

from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import decode_event
from stream.core.engine import Family, KpiEngine
from stream.core.timeparse import parse_rfc3339_us

AS_OF = parse_rfc3339_us("2026-11-20T10:00:00+07:00")
SETTINGS = KpiSettings(clock=ClockSetting("pinned", AS_OF), periods=("month",), period_history=2)
EVENTS = [
    {"event_id": "c", "type": "lead.created", "occurred_at": "2026-09-10T10:00:00+07:00", "lead_id": "L1",
     "rep_id": "r7"},
    {"event_id": "u", "type": "lead.updated", "occurred_at": "2026-10-01T10:00:00+07:00", "lead_id": "L1",
     "rep_id": "r8"},
]


def sent_groups(flush_between: bool) -> dict:
    engine = KpiEngine(SETTINGS, AS_OF)
    sent: dict = {}
    for doc in EVENTS:
        engine.apply(decode_event(orjson.dumps(doc), AS_OF, SETTINGS))
        if flush_between:
            for family, scope, _vector in engine.take_dirty():
                sent[(family, scope)] = dict(engine.period_groups(family, scope))
    for family, scope, _vector in engine.take_dirty():
        sent[(family, scope)] = dict(engine.period_groups(family, scope))
    return sent


def test_a_period_whose_contributions_cancel_before_the_first_flush_is_still_sent_as_zeros():
    live = sent_groups(flush_between=True)  # the engine that crashed sent r7's September as 1, then 0
    rebuilt = sent_groups(flush_between=False)  # its replacement applies both facts before flushing
    key = (Family.LEAD, ("rep", "r7"))
    assert set(rebuilt[key]) == set(live[key]) != set()
    assert rebuilt[key] == live[key]  # the same (zero) sums: stage 2 ends with the same value
