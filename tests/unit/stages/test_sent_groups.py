"""Stage 1 sends a scope's period groups only when they moved (stream/stages/sent_groups.py) and
the scope stage keeps the ones a partial leaves out (stream/stages/scope_periods.py
`carried_over`): what the scope stage publishes is what it publishes when every partial carries
every group -- round by round, through the wire forms, with two sources whose clocks cross local
midnight of the 1st at different rounds (one before the scope stage, one with it), late events
into the closed month, and a source whose engine is rebuilt (its next partial carries everything)."""

from __future__ import annotations

import dataclasses

from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.engine import KpiEngine, Layouts
from stream.core.timeparse import parse_rfc3339_us
from stream.devtools import generator
from stream.kafka.wire_partials import decode_groups, encode_groups
from stream.kafka.wire_vectors import decode_vector, encode_vector
from stream.stages.publication import Publisher, RoundOutput
from stream.stages.scope_board import ScopePartials
from stream.stages.scope_periods import ScopePeriods
from stream.stages.sent_groups import SentGroups
from stream.stages.updates import round_stamp

BOUNDARY = parse_rfc3339_us("2026-11-30T17:00:00Z")  # local midnight of 2026-12-01 in Asia/Jakarta
MINUTE = 60_000_000


class NoGauges:
    export_scopes: tuple[str, ...] = ()

    def set(self, value) -> None:
        pass

    def remove(self, value) -> None:
        pass


class ScopeStageModel:
    """The scope stage's receive and publication steps (stream/worker/scope_stage.py) on wire forms."""

    def __init__(self, settings: KpiSettings, now_us: int) -> None:
        self.settings = settings
        self.layouts = Layouts.build(settings)
        self.periods = ScopePeriods(settings, self.layouts, now_us)
        self.publisher = Publisher(NoGauges())
        self.board: dict[tuple, ScopePartials] = {}

    def receive(self, key: tuple, source: int, version: tuple, vector: list, encoded_groups: list) -> None:
        partials = self.board.setdefault(key, ScopePartials(0))
        assert partials.is_newer(source, version)
        received = decode_groups(encoded_groups, decode_vector)
        carried, carried_stored = self.periods.carried_over(
            partials.groups.get(source, ()), partials.encoded_groups.get(str(source), []), received)
        partials.keep(source, version, vector, vector, received + carried, encoded_groups + carried_stored)

    def publish(self, now_us: int, keys: set) -> dict[str, bytes]:
        if self.periods.follow(now_us):
            keys = keys | self.periods.scopes
            self.publisher.forget_windows(self.periods.is_published_window)
        out = RoundOutput(round_stamp(now_us, now_us, "/test"), 4)
        for key in sorted(keys):
            partials = self.board[key]
            self.publisher.publish(key, self.periods.values(key, partials, partials.total()), out)
        return out.redis


def test_sending_moved_groups_only_publishes_what_sending_every_group_does():
    start = BOUNDARY - 30 * MINUTE
    config = generator.GeneratorConfig(seed=11, events=3000, outlets=120, reps=6, days=40,
                                       end="2026-11-30T16:30:00Z", duplicate_fraction=0.02, late_fraction=0.1,
                                       malformed_fraction=0.0)
    lines = [m for m in generator.generate(config) if m.topic.startswith("sales.")]
    settings = dataclasses.replace(KpiSettings(), clock=ClockSetting("pinned", start))
    engines = [KpiEngine(settings, start), KpiEngine(settings, start)]
    sent = [SentGroups(), SentGroups()]
    moved_only, every_group = ScopeStageModel(settings, start), ScopeStageModel(settings, start)

    chunk = 150
    rounds = len(lines) // chunk + 1
    crossing = rounds * 2 // 3
    groups_sent = groups_held = 0
    for number in range(rounds):
        # source 1's clock crosses local midnight of the 1st three rounds before source 0's and
        # the scope stage's; the late events after it correct the closed month
        stage_now = start if number < crossing else BOUNDARY + 2 * MINUTE
        source_now = [stage_now, start if number < crossing - 3 else BOUNDARY + 2 * MINUTE]
        for message in lines[number * chunk:(number + 1) * chunk]:
            source = message.key[-1] % 2 if message.key else 0
            try:
                event = decode_event(message.value, source_now[source], settings)
            except Rejected:
                continue
            engines[source].apply(event)
        if number == crossing + 2:
            sent[0].forget()  # as a rebuilt engine's first partial: every group
        changed = set()
        for source, engine in enumerate(engines):
            engine.advance(source_now[source])
            for family, scope, vector in engine.take_dirty():
                key = (family.value, scope[0], scope[1])
                groups = engine.period_groups(family, scope)
                moved = sent[source].moved((family, scope), groups)
                groups_sent += len(moved)
                groups_held += len(groups)
                version = (1, number)
                moved_only.receive(key, source, version, list(vector), encode_groups(moved, encode_vector))
                every_group.receive(key, source, version, list(vector), encode_groups(groups, encode_vector))
                changed.add(key)
        assert moved_only.publish(stage_now, changed) == every_group.publish(stage_now, changed), number
    assert moved_only.publisher.latest_bodies == every_group.publisher.latest_bodies
    assert any(b'"window":"2026-12"' in body for body in moved_only.publisher.latest_bodies.values())
    # the point of it (this history spreads over 40 days; live traffic moves ~4 groups of 13)
    assert groups_sent < 0.75 * groups_held, (groups_sent, groups_held)


def test_a_scope_first_sent_or_forgotten_sends_every_group_then_only_new_vectors():
    sent = SentGroups()
    b = ((0, 5, False), (1, 2, False))  # (kind position, period index, lmtd)
    day, month = tuple([1, 0]), tuple([2, 0])
    first = [(b[0], day), (b[1], month)]
    assert sent.moved("scope", first) == first
    assert sent.moved("scope", first) == []
    new_day = tuple([1, 1])
    assert sent.moved("scope", [(b[0], new_day), (b[1], month)]) == [(b[0], new_day)]
    # an equal vector that is another object counts as moved: identity is the engine's signal
    month_again = tuple([2, 0])
    assert sent.moved("scope", [(b[0], new_day), (b[1], month_again)]) == [(b[1], month_again)]
    sent.forget()
    assert sent.moved("scope", [(b[0], new_day), (b[1], month_again)]) == [(b[0], new_day), (b[1], month_again)]
    assert len(sent) == 1
