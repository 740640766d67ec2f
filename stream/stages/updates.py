"""KPI update messages (spec 5.1): key, JSON value and CloudEvents headers, in their readable form
(replay writes these; the worker builds the same bytes faster in stream/stages/publication.py)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import orjson

from stream.core.catalogue import kpi_key
from stream.core.kpis import KpiValue
from stream.core.timeparse import format_rfc3339_us

CE_TYPE = "kpi.updated.v1"


def update_key(value: KpiValue) -> str:
    return kpi_key(value.kpi, value.window, value.scope, value.scope_id, value.horizon or value.kind)


@dataclass(frozen=True, slots=True)
class RoundStamp:
    """What every update of one publication round shares: `as_of` and `computed_at` as RFC 3339
    text and the CloudEvents headers that do not depend on the key. Built once per round, not
    per update (a round publishes up to a few thousand updates)."""

    as_of: str
    computed_at: str
    shared_headers: tuple[tuple[str, bytes], ...]  # every header but ce_id, in spec order after it


def round_stamp(as_of_us: int, computed_at_us: int, source: str) -> RoundStamp:
    computed_at = format_rfc3339_us(computed_at_us)
    return RoundStamp(
        as_of=format_rfc3339_us(as_of_us),
        computed_at=computed_at,
        shared_headers=(
            ("ce_source", source.encode()),
            ("ce_type", CE_TYPE.encode()),
            ("ce_time", computed_at.encode()),
            ("content-type", b"application/json"),
        ),
    )


def update_message(value: KpiValue, stamp: RoundStamp) -> dict:
    return {
        "v": 1,
        "kpi": value.kpi,
        "window": value.window,
        "scope": value.scope,
        "scope_id": value.scope_id,
        "as_of": stamp.as_of,
        "value": value.value,
        "numerator": value.numerator,
        "denominator": value.denominator,
        "horizon": value.horizon,
        "kind": value.kind,
        "computed_at": stamp.computed_at,
    }


SPEC_VERSION_HEADER = ("ce_specversion", b"1.0")


def cloudevent_headers(key: str, stamp: RoundStamp) -> list[tuple[str, bytes]]:
    """Binary-mode CloudEvents headers; `ce_id` is deterministic from the key and `as_of`."""
    ce_id = hashlib.sha256(f"{key}@{stamp.as_of}".encode()).hexdigest()[:32]
    return [SPEC_VERSION_HEADER, ("ce_id", ce_id.encode()), *stamp.shared_headers]


def encode(message: dict) -> bytes:
    return orjson.dumps(message)
