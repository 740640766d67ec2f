"""Synthetic field-sales traffic for a brand: outlets over regions, territories, distributors and
channels with assigned reps; onboarding over time; visit beats; orders whose frequency varies by
outlet (weekly buyers, monthly buyers, outlets that go dormant for weeks and come back); orders
linked to visits, sometimes arriving days late; leads moving through stages to won or lost (a
few closed twice, a few updated before their creation arrives); rep activities.

Deterministic for a seed. Mixed in on purpose: byte-identical duplicates, late (out-of-order)
deliveries, and malformed messages covering every rejection reason of spec section 4.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import orjson

from stream.core.calendar import Calendar, designator
from stream.core.routing import key_for
from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us

DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000
CHANNELS = ("general_trade", "modern_trade", "horeca", "pharmacy")
KINDS = ("call", "email", "meeting", "demo")
STAGES = ("qualified", "proposal", "negotiation")
OFFSETS_MIN = (0, 0, 420, -300, 330)  # Z, Z, +07:00, -05:00, +05:30


@dataclass(frozen=True, slots=True)
class GeneratorConfig:
    seed: int = 1
    events: int = 20_000
    outlets: int = 2000
    reps: int = 60
    regions: int = 4
    territories: int = 24
    distributors: int = 8
    days: int = 90
    end: str = "2026-11-24T00:00:00Z"
    duplicate_fraction: float = 0.02
    late_fraction: float = 0.03
    malformed_fraction: float = 0.01
    topic_prefix: str = ""
    # spec 10 traffic: beat plans, cancellations, repeated order ids, returns (off: the v1 mix)
    field_execution: bool = True


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes


# Events one draw of the timeline produces on average (a visit may bring an order, a lead its
# updates and closing): used to size the draws so that `events` is reached near the period's end.
EVENTS_PER_DRAW = 1.6
# Field execution (spec 10). Beat plans are made in the business time zone the worker defaults to
# (KPI_TIMEZONE Asia/Jakarta, UTC+7 all year): a plan date is the visit's local date there.
BUSINESS_OFFSET_US = 7 * HOUR_US
ON_PLAN = 0.8  # share of visits made on a planned call
MISSED_PLAN = 0.15  # share of planned calls never visited (a plan with no visit)
CANCELLED = 0.04  # share of orders cancelled, mostly after placement
DUPLICATE_ORDER = 0.01  # share of orders placed twice under one order id
RETURNED = 0.03  # share of orders with goods returned later
THINNABLE_TOPICS = frozenset({"sales.orders", "sales.visits", "sales.activities"})


def now_us(config: GeneratorConfig) -> int:
    """The generator's "now": the end of the simulated period (pin KPI_CLOCK here)."""
    end = parse_rfc3339_us(config.end)
    assert end is not None
    return end


def stamp(t_us: int, offset_minutes: int) -> str:
    if offset_minutes == 0:
        return format_rfc3339_us(t_us)
    local = format_rfc3339_us(t_us + offset_minutes * 60_000_000)[:-1]
    sign = "+" if offset_minutes > 0 else "-"
    m = abs(offset_minutes)
    return f"{local}{sign}{m // 60:02d}:{m % 60:02d}"


@dataclass(slots=True)
class Outlet:
    outlet_id: str
    region: str
    territory: str
    distributor: str
    channel: str
    rep: str
    onboarded_us: int
    onboards: bool
    every_days: float
    dormant_from: int | None
    dormant_until: int | None


class World:
    def __init__(self, config: GeneratorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.end = now_us(config)
        self.start = self.end - config.days * DAY_US
        self.serial = 0
        rng = self.rng
        self.reps = [f"rep-{n:03d}" for n in range(config.reps)]
        self.territory_region = {f"T{n:02d}": f"region-{n % config.regions}" for n in range(config.territories)}
        territories = sorted(self.territory_region)
        self.outlets: list[Outlet] = []
        for n in range(config.outlets):
            territory = rng.choice(territories)
            onboarded = self.start - rng.randint(0, 200) * DAY_US if rng.random() < 0.5 else \
                self.start + rng.randint(0, (self.end - self.start) // HOUR_US) * HOUR_US
            profile = rng.random()
            every = 7.0 if profile < 0.4 else 30.0 if profile < 0.75 else 3.0
            dormant_from = dormant_until = None
            if rng.random() < 0.2:
                dormant_from = self.start + rng.randint(5, max(6, config.days - 50)) * DAY_US
                dormant_until = dormant_from + rng.randint(32, 45) * DAY_US
            self.outlets.append(Outlet(
                f"OUT-{n:05d}", self.territory_region[territory], territory, f"DIST-{n % config.distributors}",
                rng.choice(CHANNELS), rng.choice(self.reps), onboarded, rng.random() > 0.05, every,
                dormant_from, dormant_until))
        self.cum_weights = list(itertools.accumulate(1.0 / o.every_days for o in self.outlets))
        self.leads: list[dict] = []

    def event_id(self) -> str:
        self.serial += 1
        return f"evt-{self.config.seed}-{self.serial}"

    def doc(self, event_type: str, t_us: int, **fields) -> dict:
        doc = {"event_id": self.event_id(), "type": event_type,
               "occurred_at": stamp(t_us, self.rng.choice(OFFSETS_MIN))}
        doc.update({k: v for k, v in fields.items() if v is not None})
        return doc

    def amount(self):
        cents = self.rng.randint(500, 250_000)
        return f"{cents // 100}.{cents % 100:02d}" if self.rng.random() < 0.5 else cents / 100

    def outlet_event(self, outlet: Outlet, t_us: int, onboarding: bool) -> dict:
        return self.doc("outlet.onboarded" if onboarding else "outlet.updated", t_us, outlet_id=outlet.outlet_id,
                        region=outlet.region, territory=outlet.territory, distributor_id=outlet.distributor,
                        channel=outlet.channel, rep_id=outlet.rep)

    def monthly_targets(self, end_us: int, months: int = 2, orders_per_day: float | None = None) -> list[tuple[int, str, dict]]:
        """Monthly targets (spec 9) for the month holding `end_us` and the `months - 1` before it,
        in the default business time zone: per territory active accounts, orders, sales and visits,
        per rep orders, sales and activities; set at 08:00 on the 1st, about a tenth re-set on the
        15th. Sized from the world (outlets per territory, the traffic's daily orders) with +-25 %
        so that attainment spreads around 100 %. Values come from a random stream of their own."""
        rng = random.Random(self.config.seed * 7_919 + 35)
        calendar = Calendar("Asia/Jakarta", ("month",))
        per_territory = collections.Counter(outlet.territory for outlet in self.outlets)
        if orders_per_day is None:  # ~0.3 orders per event once onboardings are left out (measured)
            orders_per_day = max(0, self.config.events - len(self.outlets)) / max(1, self.config.days) * 0.30
        month_orders = orders_per_day * 30
        territories, reps = len(per_territory) or 1, len(self.reps) or 1
        # per order: 0.6 visits and 0.36 activities (the draw's shares), 1,250 of sales on average
        aims = {  # kpi -> (scope, per-scope monthly size)
            "territory": {"active_accounts": lambda t: per_territory[t] * 0.45, "orders": lambda t: month_orders / territories,
                          "sales_amount": lambda t: month_orders / territories * 1_250, "visits": lambda t: month_orders / territories * 0.6},
            "rep": {"orders": lambda r: month_orders / reps, "sales_amount": lambda r: month_orders / reps * 1_250,
                    "activities": lambda r: month_orders / reps * 0.36},
        }
        index = calendar.index_of("month", end_us)
        out: list[tuple[int, str, dict]] = []
        for month in range(index - months + 1, index + 1):
            start, _ = calendar.bounds("month", month)
            period = designator("month", month)
            for scope, ids in (("territory", sorted(per_territory)), ("rep", self.reps)):
                for scope_id in ids:
                    for kpi, size in aims[scope].items():
                        for at, day in ((start + 8 * HOUR_US, 1), (start + 14 * DAY_US + 9 * HOUR_US, 15)):
                            if at > end_us or (day == 15 and rng.random() > 0.1):
                                continue
                            value = size(scope_id) * rng.uniform(0.75, 1.25)
                            value = f"{value:.2f}" if kpi == "sales_amount" else max(1, round(value))
                            doc = self.doc("target.set", at, kpi=kpi, period=period, scope=scope, scope_id=scope_id,
                                           value=value)
                            out.append((at, "sales.targets", doc))
        return out

    def timeline(self, valid: int) -> list[tuple[int, str, dict]]:
        """(occurred_us, topic, doc) for `valid` events, in occurred order."""
        rng = self.rng
        out: list[tuple[int, str, dict]] = []
        for outlet in self.outlets:
            if outlet.onboards:
                t = max(outlet.onboarded_us, self.start - 400 * DAY_US)
                out.append((t, "sales.outlets", self.outlet_event(outlet, t, True)))
        if valid >= 2_000:  # small worlds (unit tests) keep to the v1 event types
            out.extend(self.monthly_targets(self.end))
        draws = max(0, round((valid - len(out)) / EVENTS_PER_DRAW))
        times = sorted(rng.randint(self.start, self.end) for _ in range(draws))
        for t in times:
            roll = rng.random()
            if roll < 0.36:
                self._order(out, t)
            elif roll < 0.66:
                self._visit(out, t)
            elif roll < 0.84:
                rep = rng.choice(self.reps)
                lead = rng.choice(self.leads)["lead_id"] if self.leads and rng.random() < 0.3 else None
                outlet = rng.choice(self.outlets).outlet_id if rng.random() < 0.3 else None
                out.append((t, "sales.activities", self.doc("activity.logged", t, rep_id=rep, kind=rng.choice(KINDS),
                                                             lead_id=lead, outlet_id=outlet)))
            elif roll < 0.97:
                self._lead(out, t)
            else:
                outlet = rng.choice(self.outlets)
                if rng.random() < 0.5:
                    outlet.territory = rng.choice(sorted(self.territory_region))
                    outlet.region = self.territory_region[outlet.territory]
                else:
                    outlet.rep = rng.choice(self.reps)
                out.append((t, "sales.outlets", self.outlet_event(outlet, t, False)))
        out.sort(key=lambda item: item[0])
        if len(out) > valid:
            # Thin uniformly over the period (orders, visits, activities), never by cutting the
            # tail: the last days before "now" are what the short windows look at.
            thinnable = [i for i, (_, topic, _) in enumerate(out) if topic in THINNABLE_TOPICS]
            dropped = set(rng.sample(thinnable, min(len(thinnable), len(out) - valid)))
            out = [event for i, event in enumerate(out) if i not in dropped][:valid]
        return out

    def _pick_outlet(self, t: int) -> Outlet:
        for _ in range(5):
            outlet = self.rng.choices(self.outlets, cum_weights=self.cum_weights)[0]
            if outlet.dormant_from is None or not (outlet.dormant_from <= t < outlet.dormant_until):
                return outlet
        return outlet

    def _order(self, out, t: int, visit_id: str | None = None, outlet: Outlet | None = None, rep=None) -> None:
        outlet = outlet or self._pick_outlet(t)
        doc = self.doc("order.placed", t, outlet_id=outlet.outlet_id, order_id=f"ORD-{self.serial}",
                       amount=self.amount(), currency="USD", lines=self.rng.randint(1, 20),
                       rep_id=rep if rep else (outlet.rep if self.rng.random() < 0.6 else None), visit_id=visit_id)
        out.append((t, "sales.orders", doc))
        if self.config.field_execution:
            self._after_order(out, t, outlet, doc)

    def _after_order(self, out, t: int, outlet: Outlet, order: dict) -> None:
        follow_up = self.order_follow_up(t, outlet, order, latest=self.end)
        if follow_up is not None:
            out.append(follow_up)

    def order_follow_up(self, t: int, outlet: Outlet, order: dict, earliest: int | None = None,
                        latest: int | None = None) -> tuple[int, str, dict] | None:
        """What may follow an order placed at `t` (spec 10.4): a cancellation (after placement, or
        a few stamped before it), a repeated placement of the same order id, or a return -- as
        (when, topic, doc), `when` kept within [earliest, latest] -- or nothing."""
        rng = self.rng
        ids = {"outlet_id": outlet.outlet_id, "order_id": order["order_id"]}

        def within(when: int) -> int:
            when = when if earliest is None else max(earliest, when)
            return when if latest is None else min(latest, when)

        roll = rng.random()
        if roll < CANCELLED:
            when = within(t + rng.randint(-30, 2 * 24 * 60) * 60_000_000)
            return when, "sales.orders", self.doc("order.cancelled", when, reason="customer request", **ids)
        if roll < CANCELLED + DUPLICATE_ORDER:
            when = within(t + rng.randint(0, 60) * 60_000_000)
            fields = {k: v for k, v in order.items() if k not in ("event_id", "type", "occurred_at")}
            return when, "sales.orders", self.doc("order.placed", when, **fields)
        if roll < CANCELLED + DUPLICATE_ORDER + RETURNED:
            when = within(t + rng.randint(1, 10) * DAY_US)
            cents = rng.randint(100, 20_000)
            return when, "sales.orders", self.doc("order.returned", when, amount=f"{cents // 100}.{cents % 100:02d}",
                                                  currency="USD", rep_id=order.get("rep_id"), **ids)
        return None

    def _plan(self, out, t: int, outlet: Outlet, rep: str, visited: bool) -> None:
        """A beat plan's call on the local date of `t`, made on the Monday before (a weekly beat);
        some are re-planned (moved to the next day) or cancelled later in the week."""
        rng = self.rng
        local = (t + BUSINESS_OFFSET_US) // DAY_US  # local day number
        monday = (local - (local + 3) % 7) * DAY_US - BUSINESS_OFFSET_US + 6 * HOUR_US
        made = max(self.start, min(monday, t - HOUR_US))
        plan_date = format_rfc3339_us(local * DAY_US)[:10]
        ids = {"outlet_id": outlet.outlet_id, "rep_id": rep}
        out.append((made, "sales.visits", self.doc("visit.planned", made, plan_date=plan_date, **ids)))
        if visited or rng.random() > 0.3:
            return
        when = min(self.end, made + rng.randint(1, 48) * HOUR_US)
        out.append((when, "sales.visits", self.doc("visit.planned", when, plan_date=plan_date, status="cancelled", **ids)))
        if rng.random() < 0.5:  # re-planned for the day after
            next_date = format_rfc3339_us((local + 1) * DAY_US)[:10]
            out.append((when, "sales.visits", self.doc("visit.planned", when, plan_date=next_date, **ids)))

    def _visit(self, out, t: int) -> None:
        outlet = self._pick_outlet(t)
        visit_id = f"VIS-{self.serial}"
        check_in = t - self.rng.randint(5, 40) * 60_000_000
        out.append((t, "sales.visits", self.doc("visit.completed", t, outlet_id=outlet.outlet_id, visit_id=visit_id,
                                                rep_id=outlet.rep, checked_in_at=stamp(check_in, 0),
                                                checked_out_at=stamp(t, 0))))
        if self.config.field_execution:
            if self.rng.random() < ON_PLAN:
                self._plan(out, t, outlet, outlet.rep, visited=True)
            if self.rng.random() < MISSED_PLAN:  # a planned call nobody made, on another outlet
                other = self._pick_outlet(t)
                self._plan(out, t, other, other.rep, visited=False)
        if self.rng.random() < 0.45:
            delay = self.rng.randint(1, 90) * 60_000_000 if self.rng.random() < 0.8 else self.rng.randint(1, 5) * DAY_US
            when = min(self.end, t + delay)
            self._order(out, when, visit_id=visit_id, outlet=outlet, rep=outlet.rep)

    def _lead(self, out, t: int) -> None:
        rng = self.rng
        lead_id = f"LEAD-{self.serial}"
        rep = rng.choice(self.reps)
        region = f"region-{rng.randrange(self.config.regions)}" if rng.random() < 0.8 else None
        out.append((t, "sales.leads", self.doc("lead.created", t, lead_id=lead_id, rep_id=rep,
                                               value=rng.randint(1, 500) * 100 if rng.random() < 0.85 else None,
                                               region=region)))
        self.leads.append({"lead_id": lead_id})
        u = t + rng.randint(1, 20) * DAY_US
        if u < self.end and rng.random() < 0.6:
            owner = rng.choice(self.reps) if rng.random() < 0.2 else None
            out.append((u, "sales.leads", self.doc("lead.updated", u, lead_id=lead_id, stage=rng.choice(STAGES),
                                                   value=rng.randint(1, 500) * 100 if rng.random() < 0.5 else None,
                                                   rep_id=owner)))
        c = u + rng.randint(1, 30) * DAY_US
        if c < self.end and rng.random() < 0.7:
            won = rng.random() < 0.4
            kind = "lead.won" if won else "lead.lost"
            extra = {"value": rng.randint(1, 500) * 100} if won and rng.random() < 0.5 else {"reason": "price"} if not won else {}
            out.append((c, "sales.leads", self.doc(kind, c, lead_id=lead_id, **extra)))
            if rng.random() < 0.05:  # closed twice
                c2 = min(self.end, c + rng.randint(0, 3) * DAY_US)
                out.append((c2, "sales.leads", self.doc(rng.choice(["lead.won", "lead.lost"]), c2, lead_id=lead_id)))


def key_of(topic: str, doc: dict) -> bytes:
    """The key of a generated (valid) event on its topic (unprefixed): spec section 1."""
    key = key_for(topic, doc)
    assert key is not None, (topic, doc)
    return key.encode()


_MALFORMED_REASONS = ("malformed_json", "not_an_object", "unknown_type", "missing_field", "bad_type", "bad_value",
                      "bad_timestamp", "currency_mismatch", "future_event", "malformed_json_bytes", "oversized")


def malformed_message(world: World, index: int, ref_us: int | None = None) -> Message:
    """A bad order of the index-th kind, relative to `ref_us` (default: the period's end)."""
    ref = world.end if ref_us is None else ref_us
    reason = _MALFORMED_REASONS[index % len(_MALFORMED_REASONS)]
    t = ref - world.rng.randint(1, 30) * DAY_US
    outlet = world.rng.choice(world.outlets)
    base = world.doc("order.placed", t, outlet_id=outlet.outlet_id, order_id=f"ORD-BAD-{index}", amount="10.00",
                     currency="USD", lines=1)
    key = outlet.outlet_id.encode()
    if reason == "malformed_json":
        return Message("sales.orders", key, orjson.dumps(base)[:-7])
    if reason == "malformed_json_bytes":
        return Message("sales.orders", key, b'{"event_id": "\xff\xfe broken \x80"}')
    if reason == "not_an_object":
        return Message("sales.orders", key, orjson.dumps([base]))
    if reason == "unknown_type":
        base["type"] = "order.voided"
    elif reason == "missing_field":
        del base["order_id"]
    elif reason == "bad_type":
        base["lines"] = "three"
    elif reason == "bad_value":
        base["amount"] = -5
    elif reason == "bad_timestamp":
        base["occurred_at"] = "24/11/2026 10:00"
    elif reason == "currency_mismatch":
        base["currency"] = "EUR"
    elif reason == "future_event":
        base["occurred_at"] = format_rfc3339_us(ref + world.rng.randint(1, 48) * HOUR_US)
    elif reason == "oversized":
        base["notes"] = "x" * 70_000
    return Message("sales.orders", key, orjson.dumps(base))


def generate(config: GeneratorConfig) -> Iterator[Message]:
    """Exactly `config.events` messages, in arrival order."""
    world = World(config)
    rng = world.rng
    malformed = round(config.events * config.malformed_fraction)
    duplicates = round(config.events * config.duplicate_fraction)
    valid = config.events - malformed - duplicates
    timeline = world.timeline(valid)
    while len(timeline) < valid:  # tiny configs: top up with activities
        t = rng.randint(world.start, world.end)
        timeline.append((t, "sales.activities", world.doc("activity.logged", t, rep_id=rng.choice(world.reps),
                                                          kind=rng.choice(KINDS))))
    arrivals: list[tuple[int, int, Message]] = []
    for position, (t, topic, doc) in enumerate(timeline):
        arrive = t
        if rng.random() < config.late_fraction:
            arrive = min(world.end, t + (rng.randint(1, 72) * HOUR_US if rng.random() < 0.7 else rng.randint(3, 75) * DAY_US))
        arrivals.append((arrive, position, Message(config.topic_prefix + topic, key_of(topic, doc), orjson.dumps(doc))))
    arrivals.sort(key=lambda item: (item[0], item[1]))
    messages = [message for _, _, message in arrivals]
    for n in range(duplicates):
        source = rng.randrange(len(messages))
        messages.insert(rng.randint(source + 1, len(messages)), messages[source])
    for n in range(malformed):
        bad = malformed_message(world, n)
        messages.insert(rng.randint(0, len(messages)), Message(config.topic_prefix + bad.topic, bad.key, bad.value))
    yield from messages


def write_jsonl(messages: Iterable[Message], path: Path) -> int:
    """One raw message value per line (JSON never contains a raw newline; garbage here has none)."""
    count = 0
    with open(path, "wb") as handle:
        for message in messages:
            handle.write(message.value)
            handle.write(b"\n")
            count += 1
    return count


async def produce(messages: Iterable[Message], bootstrap_servers: str, rate_per_second: float | None = None,
                  topic_prefix: str = "", **security) -> dict[str, int]:
    """Produce to Kafka, at `rate_per_second` (None: as fast as possible). Returns counts by topic."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", enable_idempotence=True,
                                linger_ms=5, max_batch_size=262_144, max_request_size=1_048_576, **security)
    await producer.start()
    counts: dict[str, int] = {}
    started = time.monotonic()
    try:
        pending = []
        for n, message in enumerate(messages):
            if rate_per_second:
                due = started + n / rate_per_second
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            topic = topic_prefix + message.topic
            pending.append(await producer.send(topic, key=message.key, value=message.value))
            counts[topic] = counts.get(topic, 0) + 1
            if len(pending) >= 10_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts


# -- live mode: a recent history ending now, then traffic on the wall clock -----------------------
#
