"""Where a raw input message belongs (spec section 1): its topic by `type`, its key by that topic.

Pure. The worker re-routes what arrives on the wrong topic or key with `TYPE_TOPIC`
(stream/worker/entity_stage.py); `kpi-stream send` routes each line of a file with `route`
(stream/send.py); the generator keys what it makes with `key_for` (stream/devtools/generator.py).

`route` judges nothing beyond what routing needs: a message that is not a JSON object, whose type
is unknown or whose key field is not a usable string goes to the mixed topic `sales.events` with no
key, where the worker decodes it like any other message and dead-letters it with the reason its
decoder finds (the same reason on every topic: stream/core/decode.py is topic-blind). A message of
a known type with its key goes to its own topic and key, however bad its other fields: the worker
rejects it there, with that topic as its source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import orjson

from stream.core.targets import target_identity

MIXED_TOPIC = "sales.events"

TYPE_TOPIC: dict[str, str] = {
    "outlet.onboarded": "sales.outlets", "outlet.updated": "sales.outlets",
    "order.placed": "sales.orders", "visit.completed": "sales.visits",
    "lead.created": "sales.leads", "lead.updated": "sales.leads", "lead.won": "sales.leads",
    "lead.lost": "sales.leads", "activity.logged": "sales.activities", "target.set": "sales.targets",
}
# field execution (spec 10), keyed by outlet_id on the outlet family's topics
TYPE_TOPIC.update({"visit.planned": "sales.visits", "order.cancelled": "sales.orders",
                   "order.returned": "sales.orders"})

KeyOf = Callable[[dict], "str | None"]


def _field(name: str) -> KeyOf:
    """The key is one field's value: a non-empty string, as the decoder requires of every id."""

    def key_of(doc: dict) -> str | None:
        value = doc.get(name)
        return value if isinstance(value, str) and value else None

    key_of.__name__ = f"field_{name}"
    return key_of


def _target_key(doc: dict) -> str | None:
    """A target's identity (spec 9), from the fields the decoder requires of it."""
    parts = [doc.get(name) for name in ("kpi", "period", "scope", "scope_id")]
    if not all(isinstance(part, str) and part for part in parts):
        return None
    kind = doc.get("kind")
    if parts[0] == "activities":
        kind = kind if isinstance(kind, str) and kind else "all"
    elif kind is not None:
        return None  # the decoder rejects it (bad_value): sent where it will be judged
    return target_identity(*parts, kind)


# Each typed topic's key, from the whole event (spec section 1). A key is a function of the event,
# not a field name: `sales.targets` (spec 9) is keyed by the target's identity
# `{kpi}|{period}|{scope}|{scope_id}` (+ `|{kind}` for activities), each segment escaped as in 5.1.
TOPIC_KEY: dict[str, KeyOf] = {
    "sales.outlets": _field("outlet_id"),
    "sales.orders": _field("outlet_id"),
    "sales.visits": _field("outlet_id"),
    "sales.leads": _field("lead_id"),
    "sales.activities": _field("rep_id"),
    "sales.targets": _target_key,
}


@dataclass(frozen=True, slots=True)
class Route:
    topic: str  # without KPI_TOPIC_PREFIX
    key: bytes | None  # None: no key (the mixed topic)


UNROUTED = Route(MIXED_TOPIC, None)


def key_for(topic: str, doc: dict) -> str | None:
    """The key of event `doc` on `topic` (unprefixed), or None when it has no usable one."""
    return TOPIC_KEY[topic](doc)


def route(raw: bytes) -> Route:
    """The topic and key of one raw input message (its exact bytes)."""
    try:
        doc = orjson.loads(raw)  # the decoder's parser: the same verdict on every byte string
    except orjson.JSONDecodeError:
        return UNROUTED
    if not isinstance(doc, dict):
        return UNROUTED
    event_type = doc.get("type")
    topic = TYPE_TOPIC.get(event_type) if isinstance(event_type, str) else None
    if topic is None:
        return UNROUTED
    key = key_for(topic, doc)
    return Route(topic, key.encode()) if key is not None else UNROUTED
