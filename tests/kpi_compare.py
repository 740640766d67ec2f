"""Comparing KPI values from two sources (engine, topic, Redis, /kpi, /metrics) with the oracle.

A key missing on one side is read as the empty value (count 0, money 0.0, ratio null over
0/0): a scope that never had anything and one that had and lost it publish the same numbers.
Integers must match exactly; floats to 1e-9 relative (they are correctly rounded divisions on
both sides, so they are in fact equal; the tolerance only absorbs the last bit).
"""

from __future__ import annotations

import math

from tests.oracle import OracleSettings


def _empty(record: dict | None) -> bool:
    if record is None:
        return True
    return all(record.get(name) in (0, 0.0, None) for name in ("value", "numerator", "denominator"))


def _same_number(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-9)


def kpi_differences(actual: dict[str, dict], expected: dict[str, dict], limit: int = 20) -> list[str]:
    """Human-readable differences between two key -> {value, numerator, denominator} maps."""
    problems = []
    for key in sorted(set(actual) | set(expected)):
        a, e = actual.get(key), expected.get(key)
        if _empty(a) and _empty(e):
            continue
        a = a or {"value": 0, "numerator": None, "denominator": None}
        e = e or {"value": 0, "numerator": None, "denominator": None}
        for name in ("value", "numerator", "denominator"):
            av, ev = a.get(name), e.get(name)
            if name != "value" and _empty_pair(av, ev):
                continue
            if not _same_number(av, ev):
                problems.append(f"{key}: {name} actual={av!r} expected={ev!r}")
                break
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems


def _empty_pair(a, b) -> bool:
    return a in (0, 0.0, None) and b in (0, 0.0, None)


def values_by_key(messages) -> dict[str, dict]:
    """kpi_update.v1 messages (dicts) -> key -> record, using the spec 5.1 key."""
    from stream.core.catalogue import kpi_key  # key format only; the values come from the messages

    out = {}
    for m in messages:
        key = kpi_key(m["kpi"], m["window"], m["scope"], m["scope_id"], m.get("horizon") or m.get("kind"))
        out[key] = {"value": m["value"], "numerator": m["numerator"], "denominator": m["denominator"]}
    return out


def oracle_settings(s) -> OracleSettings:
    """The oracle's settings equal to the engine's KpiSettings `s` (the same spec section 6 values)."""
    from stream.core.config import format_duration

    return OracleSettings(slot_seconds=s.slot_seconds, windows=tuple(format_duration(w) for w in s.windows_seconds),
                          horizons=tuple(format_duration(h) for h in s.conversion_horizons_seconds),
                          dormancy=format_duration(s.dormancy_seconds), timezone=s.timezone, periods=s.periods,
                          period_history=s.period_history)


def values_of(engine) -> dict[str, dict]:
    """Every value an engine holds now, by spec 5.1 key, in the oracle's record form."""
    from stream.stages.updates import update_key

    return {update_key(v): {"value": v.value, "numerator": v.numerator, "denominator": v.denominator}
            for v in engine.all_values()}
