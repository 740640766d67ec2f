"""The scope stage's period values (stream/stages/scope_periods.py): evaluating only the period
groups that moved since a scope's last evaluation publishes exactly what evaluating all of them
does -- round by round, across a month boundary (aliases move, new designators appear, periods
leave the published set), with two source partitions, late events and outlets moving."""

from __future__ import annotations

import dataclasses

from stream.core.config import ClockSetting, KpiSettings
from stream.core.decode import Rejected, decode_event
from stream.core.engine import KpiEngine, Layouts
from stream.core.timeparse import parse_rfc3339_us
from stream.devtools import generator
from stream.stages.publication import Publisher, RoundOutput
from stream.stages.scope_board import ScopePartials
from stream.stages.scope_periods import ScopePeriods
from stream.stages.updates import round_stamp

BOUNDARY = parse_rfc3339_us("2026-11-30T17:00:00Z")  # local midnight of 2026-12-01 in Asia/Jakarta
MINUTE = 60_000_000


class NoGauges:
    export_scopes: tuple[str, ...] = ()

    def set(self, value) -> None:
        pass

    def remove(self, value) -> None:
        pass


class FullEvaluation(ScopePeriods):
    """The reference: every group of every scope evaluated in every round."""

    def values(self, key, partials, total):
        self._evaluated.clear()
        return super().values(key, partials, total)


def test_evaluating_moved_groups_only_publishes_what_evaluating_all_does():
    start = BOUNDARY - 30 * MINUTE
    config = generator.GeneratorConfig(seed=5, events=2500, outlets=120, reps=6, days=40,
                                       end="2026-11-30T16:30:00Z", duplicate_fraction=0.02, late_fraction=0.1,
                                       malformed_fraction=0.0)
    lines = [m for m in generator.generate(config) if m.topic.startswith("sales.")]
    settings = dataclasses.replace(KpiSettings(), clock=ClockSetting("pinned", start))
    layouts = Layouts.build(settings)
    engines = [KpiEngine(settings, start), KpiEngine(settings, start)]
    stages = [(ScopePeriods(settings, layouts, start), Publisher(NoGauges())),
              (FullEvaluation(settings, layouts, start), Publisher(NoGauges()))]
    board: dict[tuple, ScopePartials] = {}
    sequence = 0
    rounds = moved = 0

    def publication_round(now_us: int, keys) -> list[dict]:
        outs = []
        for periods, publisher in stages:
            if periods.follow(now_us):
                keys = set(keys) | periods.scopes
                publisher.forget_windows(periods.is_published_window)
            out = RoundOutput(round_stamp(now_us, now_us, "/test"), 4)
            for key in sorted(keys):
                partials = board[key]
                publisher.publish(key, periods.values(key, partials, partials.total()), out)
            outs.append(out.redis)
        return outs

    chunk = 150
    for number, first in enumerate(range(0, len(lines), chunk)):
        # the clock crosses local midnight of the 1st two thirds of the way through, the late
        # events after it correcting the closed month
        now = start if number < len(lines) // chunk * 2 // 3 else BOUNDARY + 2 * MINUTE
        for message in lines[first:first + chunk]:
            try:
                event = decode_event(message.value, now, settings)
            except Rejected:
                continue
            engines[message.key[-1] % 2 if message.key else 0].apply(event)
        sequence += 1
        changed = set()
        for source, engine in enumerate(engines):
            engine.advance(now)
            for family, scope, vector in engine.take_dirty():
                key = (family.value, scope[0], scope[1])
                partials = board.setdefault(key, ScopePartials(0))
                partials.keep(source, (1, sequence), vector, vector, tuple(engine.period_groups(family, scope)), [])
                changed.add(key)
        incremental, full = publication_round(now, changed)
        assert incremental == full
        rounds += 1
        moved += len(full)
    assert stages[0][1].latest_bodies == stages[1][1].latest_bodies
    assert rounds > 10 and moved > 1000
    # the boundary was crossed and published: the new month's designator and mtd
    assert any(b'"window":"2026-12"' in body for body in stages[0][1].latest_bodies.values())
