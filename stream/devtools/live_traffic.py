"""Live synthetic traffic for the demo: recent history ending now, then traffic on the wall clock.

`live(config, now_us)` walks time forward: it writes `history_days` of traffic ending at `now_us`,
then carries on past it at `rate` events per second at the peak of a working day. It is an
iterator of (due instant, message) pairs: memory stays bounded whatever the count -- only
follow-up events not yet due (a visit's order, a lead's update and closing, an order's
cancellation or return, a plan's cancellation), the current week's beat plans and a short ring of
recent messages (for byte-identical resends) are held. The world (outlets, reps, territories) is
stream/devtools/generator.py's; `generate(config)` there builds one fixed period instead.

Field execution (spec 10), as the generator's World has it: every local Monday (Asia/Jakarta, the
worker's default KPI_TIMEZONE) each rep gets a weekly beat -- about `calls_per_day` planned calls on
each day Monday to Saturday, sent then (the history's first week from its first day); some are
cancelled later in the week, half of those re-planned for the day after, some are never visited.
Most visits are made on a call planned for their day, by its rep; the rest are unplanned. Visits
carry check-in and check-out times; orders are sometimes cancelled, placed twice under one order
id, or have goods returned days later.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import time
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple

import orjson

from stream.core.timeparse import format_rfc3339_us
from stream.devtools.generator import (BUSINESS_OFFSET_US, DAY_US, HOUR_US, KINDS, MISSED_PLAN, ON_PLAN, STAGES,
                                       GeneratorConfig, Message, Outlet, World, key_of, malformed_message, stamp)

WEEK_HOURS = 7 * 24
# Events one draw of the live world produces on average (see `_LiveSimulation._draw`)
LIVE_EVENTS_PER_DRAW = 1.34
# Of the planned calls of a week: cancelled later in the week (half of them re-planned for the next day)
PLAN_CANCELLED = 0.06
VISIT_SHARE = 0.30  # of the draws (see `_draw`)
# Follow-ups (lead updates and closings, days ahead) held at most; beyond it new leads get none
MAX_PENDING = 20_000
RECENT_FOR_DUPLICATES = 512


@dataclass(frozen=True, slots=True)
class LiveConfig:
    seed: int = 1
    outlets: int = 2000
    reps: int = 60
    regions: int = 4
    territories: int = 24
    distributors: int = 8
    history_days: int = 60
    history_events: int = 40_000  # about, beat plans not counted; 0: no history, live traffic only
    rate: float = 40.0  # events per second at the peak of a working day
    events: int | None = None  # stop after this many messages in all (None: never)
    utc_offset_minutes: int = 0  # where the working day is (the demo passes the machine's)
    duplicate_fraction: float = 0.02
    late_fraction: float = 0.03
    malformed_fraction: float = 0.01
    topic_prefix: str = ""
    max_pending: int = MAX_PENDING


class Timed(NamedTuple):
    """A message and when it is to be sent, on the wall clock."""

    due_us: int
    message: Message


def working_day_intensity(t_us: int, utc_offset_minutes: int = 0) -> float:
    """Share of the peak rate at instant `t_us`: a field team's working day (busy 08-18 on
    weekdays, shoulders 07-08 and 18-21, a quiet night), a half Saturday, a quiet Sunday."""
    local_s = t_us // 1_000_000 + utc_offset_minutes * 60
    hour = (local_s // 3600) % 24
    weekday = (local_s // 86_400 + 3) % 7  # the epoch was a Thursday; 0 = Monday
    if 8 <= hour < 18:
        level = 1.0
    elif hour == 7 or 18 <= hour < 21:
        level = 0.4
    else:
        level = 0.15
    if weekday == 5:
        level *= 0.5
    elif weekday == 6:
        level *= 0.25
    return level


def _mean_intensity(utc_offset_minutes: int) -> float:
    return sum(working_day_intensity(h * HOUR_US + HOUR_US // 2, utc_offset_minutes) for h in range(WEEK_HOURS)) / WEEK_HOURS


class _LiveSimulation:
    def __init__(self, config: LiveConfig, now_us: int) -> None:
        self.config = config
        self.now = now_us
        world_config = GeneratorConfig(seed=config.seed, outlets=config.outlets, reps=config.reps,
                                       regions=config.regions, territories=config.territories,
                                       distributors=config.distributors, days=max(1, config.history_days),
                                       end=format_rfc3339_us(now_us))
        self.world = world = World(world_config)
        self.rng = world.rng
        # event ids of their own per run (a rerun with --keep is new traffic, not duplicates)
        self.run_tag = f"{now_us // 1_000_000:x}"
        world.event_id = self._event_id
        self.serial = 0
        # every fifth outlet has a dormant spell: some ending in the last days, some during the
        # live traffic, so that reactivations show in the short windows and as the demo runs
        for outlet in world.outlets:
            if outlet.dormant_from is not None:
                outlet.dormant_until = now_us + self.rng.randint(-10 * 24, 6) * HOUR_US
                outlet.dormant_from = outlet.dormant_until - self.rng.randint(31, 40) * DAY_US
        self.leads: collections.deque[str] = collections.deque(maxlen=1000)
        self.recent: collections.deque[Message] = collections.deque(maxlen=RECENT_FOR_DUPLICATES)
        self.pending: list[tuple[int, int, Message]] = []  # (due_us, sequence, message), a heap
        self.sequence = 0
        self.bad = 0
        self.clock = now_us  # the instant of the current draw
        # this week's beat plans: local day number -> calls (outlet, rep) planned then, not yet visited
        self.plans: dict[int, list[tuple[Outlet, str]]] = {}
        self.plan_week: int | None = None  # local day number of the Monday planned for
        self.calls_per_day = calls_per_day(config)

    def _event_id(self) -> str:
        self.serial += 1
        return f"evt-{self.config.seed}-{self.run_tag}-{self.serial}"

    # -- when things happen -------------------------------------------------------------------

    def draw_times(self) -> Iterator[int]:
        """Increasing instants of draws: the history (thinned to the working day, about
        `history_events` events drawn, the beat plans on top), then from now on at `rate` at the peak."""
        rng, config = self.rng, self.config
        mean = _mean_intensity(config.utc_offset_minutes)
        if config.history_events > 0 and config.history_days > 0:
            span_s = config.history_days * 86_400
            # `history_events` are drawn (orders, visits, leads, activities): the weekly beat plans,
            # onboardings and targets come on top, so the short windows hold as many orders as
            # without field execution
            peak = config.history_events / LIVE_EVENTS_PER_DRAW / (span_s * mean)
            t = self.now - config.history_days * DAY_US
            while True:
                t += int(rng.expovariate(peak) * 1_000_000) + 1
                if t > self.now:
                    break
                if rng.random() < working_day_intensity(t, config.utc_offset_minutes):
                    yield t
        peak = config.rate / LIVE_EVENTS_PER_DRAW
        t = self.now
        while True:
            t += int(rng.expovariate(peak) * 1_000_000) + 1
            if rng.random() < working_day_intensity(t, config.utc_offset_minutes):
                yield t

    def messages(self) -> Iterator[Timed]:
        config, rng, world = self.config, self.rng, self.world
        emitted = 0
        limit = config.events
        # onboardings: older ones at the start of the history, the others when they happen
        start = self.now - config.history_days * DAY_US
        for outlet in world.outlets:
            if outlet.onboards:
                t = max(outlet.onboarded_us, start - 400 * DAY_US)
                self._schedule(t, "sales.outlets", world.outlet_event(outlet, t, True), may_be_late=False)
        # this month's and last month's targets, sized for the history's daily orders
        orders_per_day = config.history_events / max(1, config.history_days) * 0.4
        for t, topic, doc in world.monthly_targets(self.now, orders_per_day=orders_per_day):
            self._schedule(t, topic, doc, may_be_late=False)
        self.clock = start
        for t in self.draw_times():
            self.clock = t
            if _local_monday(t) != self.plan_week:
                self._plan_week(t)
            while self.pending and self.pending[0][0] <= t:
                due, _, message = heapq.heappop(self.pending)
                self.recent.append(message)
                yield Timed(due, message)
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
                if rng.random() < config.duplicate_fraction and self.recent:
                    yield Timed(due, rng.choice(self.recent))
                    emitted += 1
                    if limit is not None and emitted >= limit:
                        return
            if rng.random() < config.malformed_fraction:
                # relative to the later of its instant and now: a history's "future" event is
                # still ahead of the wall clock when it is sent
                bad = malformed_message(world, self.bad, ref_us=max(t, self.now))
                self.bad += 1
                yield Timed(t, Message(config.topic_prefix + bad.topic, bad.key, bad.value))
                emitted += 1
                if limit is not None and emitted >= limit:
                    return
            self._draw(t)

    def _schedule(self, t: int, topic: str, doc: dict, may_be_late: bool = True) -> None:
        """Send the event occurring at `t` at `t` (at the current draw if `t` is before it: an
        order's cancellation stamped before its placement), or (some) later: a late delivery. With
        `max_pending` messages waiting, nothing more is held for later than a minute ahead: late
        deliveries go on time, follow-ups further ahead are left out (memory stays bounded)."""
        rng = self.rng
        due = t
        if may_be_late and rng.random() < self.config.late_fraction:
            due = t + (rng.randint(1, 120) * 60_000_000 if rng.random() < 0.7 else rng.randint(3, 48) * HOUR_US)
        if len(self.pending) >= self.config.max_pending and due > self.clock + 60_000_000:
            if t > self.clock + 60_000_000:
                return
            due = t
        message = Message(self.config.topic_prefix + topic, key_of(topic, doc), orjson.dumps(doc))
        self.sequence += 1
        heapq.heappush(self.pending, (due, self.sequence, message))

    def _draw(self, t: int) -> None:
        rng, world = self.rng, self.world
        roll = rng.random()
        if roll < 0.36:
            self._order(t)
        elif roll < 0.66:
            self._visit(t)
        elif roll < 0.84:
            rep = rng.choice(world.reps)
            lead = rng.choice(self.leads) if self.leads and rng.random() < 0.3 else None
            outlet = rng.choice(world.outlets).outlet_id if rng.random() < 0.3 else None
            self._schedule(t, "sales.activities", world.doc("activity.logged", t, rep_id=rep, kind=rng.choice(KINDS),
                                                            lead_id=lead, outlet_id=outlet))
        elif roll < 0.97:
            self._lead(t)
        else:
            outlet = rng.choice(world.outlets)
            if rng.random() < 0.5:
                outlet.territory = rng.choice(sorted(world.territory_region))
                outlet.region = world.territory_region[outlet.territory]
            else:
                outlet.rep = rng.choice(world.reps)
            self._schedule(t, "sales.outlets", world.outlet_event(outlet, t, False))

    def _order(self, t: int, visit_id: str | None = None, outlet: Outlet | None = None, rep=None) -> None:
        world = self.world
        outlet = outlet or world._pick_outlet(t)
        doc = world.doc("order.placed", t, outlet_id=outlet.outlet_id, order_id=f"ORD-{self.run_tag}-{self.serial}",
                        amount=world.amount(), currency="USD", lines=self.rng.randint(1, 20),
                        rep_id=rep if rep else (outlet.rep if self.rng.random() < 0.6 else None), visit_id=visit_id)
        self._schedule(t, "sales.orders", doc)
        self._after_order(t, outlet, doc)

    def _after_order(self, t: int, outlet: Outlet, order: dict) -> None:
        """As the generator's World: a cancellation, a second placement or a return, never stamped
        before the current draw (nothing is sent before it is due)."""
        follow_up = self.world.order_follow_up(t, outlet, order, earliest=self.clock)
        if follow_up is not None:
            self._schedule(*follow_up)

    def _plan_week(self, t: int) -> None:
        """The week's beat plans, made at `t` (the first draw of the local week): per rep,
        `calls_per_day` calls on each remaining day Monday to Saturday at outlets assigned to it."""
        world = self.world
        monday = _local_monday(t)
        self.plan_week = monday
        self.plans = {}
        by_rep: dict[str, list[Outlet]] = collections.defaultdict(list)
        for outlet in world.outlets:
            by_rep[outlet.rep].append(outlet)
        first = max(monday, (t + BUSINESS_OFFSET_US) // DAY_US)
        for rep in world.reps:
            outlets = by_rep.get(rep)
            if not outlets:
                continue
            weights = [1.0 / outlet.every_days for outlet in outlets]
            for day in range(first, monday + 6):
                for outlet in self._beat(outlets, weights, day):
                    self._plan_call(t, outlet, rep, day, monday)

    def _beat(self, outlets: list[Outlet], weights: list[float], day: int) -> list[Outlet]:
        """A rep's calls of one local day: about `calls_per_day` distinct outlets drawn without
        replacement, those that order more often more likely (as the world's unplanned visits pick
        them), none in a dormant spell that day."""
        day_us = day * DAY_US - BUSINESS_OFFSET_US
        rng = self.rng
        keyed = [(rng.random() ** (1.0 / weight), n) for n, (outlet, weight) in enumerate(zip(outlets, weights))
                 if outlet.dormant_from is None or not outlet.dormant_from <= day_us < outlet.dormant_until]
        keyed.sort(reverse=True)  # weighted sampling without replacement (Efraimidis-Spirakis keys)
        whole = int(self.calls_per_day)
        calls = whole + (rng.random() < self.calls_per_day - whole)  # the fraction on some days
        return [outlets[n] for _, n in keyed[:calls]]

    def _plan_call(self, t: int, outlet: Outlet, rep: str, day: int, monday: int) -> None:
        rng, world = self.rng, self.world
        ids = {"outlet_id": outlet.outlet_id, "rep_id": rep}
        self._schedule(t, "sales.visits", world.doc("visit.planned", t, plan_date=_plan_date(day), **ids),
                       may_be_late=False)
        roll = rng.random()
        if roll < PLAN_CANCELLED:  # cancelled in the next two days; half re-planned for the day after
            when = t + rng.randint(1, 48) * HOUR_US
            self._schedule(when, "sales.visits", world.doc("visit.planned", when, plan_date=_plan_date(day),
                                                           status="cancelled", **ids))
            if rng.random() < 0.5 and day + 1 < monday + 6:
                self._schedule(when, "sales.visits", world.doc("visit.planned", when, plan_date=_plan_date(day + 1),
                                                               **ids))
                self.plans.setdefault(day + 1, []).append((outlet, rep))
        elif roll < PLAN_CANCELLED + MISSED_PLAN:
            pass  # planned, never visited
        else:
            self.plans.setdefault(day, []).append((outlet, rep))

    def _visit(self, t: int) -> None:
        rng, world = self.rng, self.world
        calls = self.plans.get((t + BUSINESS_OFFSET_US) // DAY_US)
        if calls and rng.random() < ON_PLAN:  # a call of today's beat, by its rep
            i = rng.randrange(len(calls))
            calls[i], calls[-1] = calls[-1], calls[i]
            outlet, rep = calls.pop()
        else:  # unplanned
            outlet = world._pick_outlet(t)
            rep = outlet.rep
        visit_id = f"VIS-{self.run_tag}-{self.serial}"
        check_in = t - rng.randint(5, 40) * 60_000_000
        self._schedule(t, "sales.visits", world.doc("visit.completed", t, outlet_id=outlet.outlet_id, visit_id=visit_id,
                                                    rep_id=rep, checked_in_at=stamp(check_in, 0),
                                                    checked_out_at=stamp(t, 0)))
        if rng.random() < 0.45:  # the order taken on the visit, a few minutes to days later
            delay = rng.randint(1, 90) * 60_000_000 if rng.random() < 0.8 else rng.randint(1, 5) * DAY_US
            self._order(t + delay, visit_id=visit_id, outlet=outlet, rep=rep)

    def _lead(self, t: int) -> None:
        rng, world = self.rng, self.world
        lead_id = f"LEAD-{self.run_tag}-{self.serial}"
        rep = rng.choice(world.reps)
        region = f"region-{rng.randrange(world.config.regions)}" if rng.random() < 0.8 else None
        self._schedule(t, "sales.leads", world.doc("lead.created", t, lead_id=lead_id, rep_id=rep,
                                                   value=rng.randint(1, 500) * 100 if rng.random() < 0.85 else None,
                                                   region=region))
        self.leads.append(lead_id)
        u = t + rng.randint(1, 20) * DAY_US
        if rng.random() < 0.6:
            owner = rng.choice(world.reps) if rng.random() < 0.2 else None
            self._schedule(u, "sales.leads", world.doc("lead.updated", u, lead_id=lead_id, stage=rng.choice(STAGES),
                                                       value=rng.randint(1, 500) * 100 if rng.random() < 0.5 else None,
                                                       rep_id=owner))
        c = u + rng.randint(1, 30) * DAY_US
        if rng.random() < 0.7:
            won = rng.random() < 0.4
            extra = {"value": rng.randint(1, 500) * 100} if won and rng.random() < 0.5 else {"reason": "price"} if not won else {}
            self._schedule(c, "sales.leads", world.doc("lead.won" if won else "lead.lost", c, lead_id=lead_id, **extra))
            if rng.random() < 0.05:  # closed twice
                c2 = c + rng.randint(0, 3) * DAY_US
                self._schedule(c2, "sales.leads", world.doc(rng.choice(["lead.won", "lead.lost"]), c2, lead_id=lead_id))


def _local_monday(t_us: int) -> int:
    """The local day number (business time zone) of the Monday of `t_us`'s week."""
    local = (t_us + BUSINESS_OFFSET_US) // DAY_US
    return local - (local + 3) % 7  # the epoch was a Thursday


def _plan_date(local_day: int) -> str:
    return format_rfc3339_us(local_day * DAY_US)[:10]


def calls_per_day(config: LiveConfig) -> float:
    """Planned calls per rep and working day: enough for about ON_PLAN of the history's visits
    per rep and day to be on a plan (at least one)."""
    days = max(1, config.history_days)
    visits_per_day = config.history_events / days / LIVE_EVENTS_PER_DRAW * VISIT_SHARE
    # planned calls a rep leaves unvisited (MISSED_PLAN) need planning too
    return max(1.0, ON_PLAN * visits_per_day / (1 - MISSED_PLAN) / (max(1, config.reps) * 6 / 7))


def plan_events(config: LiveConfig, per_day: int) -> float:
    """About how many plan events (plans, cancellations, re-plans) the history holds."""
    return per_day * config.reps * config.history_days * 6 / 7 * (1 + 1.5 * PLAN_CANCELLED)


def live(config: LiveConfig, now_us: int) -> Iterator[Timed]:
    """Lazily, in due order: `config.history_days` of traffic ending at `now_us` (due at or before
    it: send at once), then traffic stamped with the instants after it, each due at its own
    instant (send then). Deterministic for (seed, now_us). Bad messages stay bad relative to
    their own instant: `future_event` ones are 1-48 hours ahead of it."""
    return _LiveSimulation(config, now_us).messages()


async def produce_live(stream: Iterable[Timed], bootstrap_servers: str, *, clock=time.time,
                       progress=None, **security) -> dict[str, int]:
    """Produce each message when it is due on the wall clock (at once if already due).
    `progress(counts, sent, history)` is called about once a second; `history` is None until a
    message first has to wait for its instant, then how many were sent before (the history, at
    once). Runs until the stream ends."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=262_144, max_request_size=1_048_576, **security)
    await producer.start()
    counts: dict[str, int] = {}
    sent = 0
    history = None
    last_report = 0.0
    try:
        pending = []
        for due_us, message in stream:
            delay = due_us / 1_000_000 - clock()
            if delay > 0:
                if history is None:
                    history = sent
                if pending:
                    await asyncio.gather(*pending)
                    pending.clear()
                if progress is not None and time.monotonic() - last_report >= 1.0:
                    progress(counts, sent, history)
                    last_report = time.monotonic()
                await asyncio.sleep(delay)
            pending.append(await producer.send(message.topic, key=message.key, value=message.value))
            counts[message.topic] = counts.get(message.topic, 0) + 1
            sent += 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
            if progress is not None and time.monotonic() - last_report >= 1.0:
                progress(counts, sent, history)
                last_report = time.monotonic()
        await asyncio.gather(*pending)
        if progress is not None:
            progress(counts, sent, history)
    finally:
        await producer.stop()
    return counts
