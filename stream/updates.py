"""KPI update messages (spec 5.1): key, JSON value, CloudEvents headers, and change detection."""

from __future__ import annotations

import hashlib
from typing import Iterable

import orjson

from .catalogue import kpi_key
from .kpis import KpiValue
from .timeparse import format_rfc3339_us

CE_TYPE = "kpi.updated.v1"


def update_key(value: KpiValue) -> str:
    return kpi_key(value.kpi, value.window, value.scope, value.scope_id, value.horizon or value.kind)


def update_message(value: KpiValue, as_of_us: int, computed_at_us: int) -> dict:
    return {
        "v": 1,
        "kpi": value.kpi,
        "window": value.window,
        "scope": value.scope,
        "scope_id": value.scope_id,
        "as_of": format_rfc3339_us(as_of_us),
        "value": value.value,
        "numerator": value.numerator,
        "denominator": value.denominator,
        "horizon": value.horizon,
        "kind": value.kind,
        "computed_at": format_rfc3339_us(computed_at_us),
    }


def cloudevent_headers(key: str, message: dict, source: str) -> list[tuple[str, bytes]]:
    ce_id = hashlib.sha256(f"{key}@{message['as_of']}".encode()).hexdigest()[:32]
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", ce_id.encode()),
        ("ce_source", source.encode()),
        ("ce_type", CE_TYPE.encode()),
        ("ce_time", message["computed_at"].encode()),
        ("content-type", b"application/json"),
    ]


class ChangeFilter:
    """Remembers the last published (value, numerator, denominator) per key; passes on changes.

    One publication round per interval sends every key that changed since the last round, so a
    key is republished at most once per interval, and only when its value moved.
    """

    def __init__(self) -> None:
        self.last: dict[str, tuple] = {}

    def changed(self, values: Iterable[KpiValue]) -> list[tuple[str, KpiValue]]:
        out = []
        for value in values:
            key = update_key(value)
            signature = (value.value, value.numerator, value.denominator)
            if self.last.get(key) != signature:
                self.last[key] = signature
                out.append((key, value))
        return out

    def forget(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.last.pop(key, None)


def encode(message: dict) -> bytes:
    return orjson.dumps(message)
