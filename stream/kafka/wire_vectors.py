"""Scope vectors as JSON: how stage 1's partials and the scope-partials table carry them.

A vector is a list of Python numbers: counts and other ints, and exact `Decimal` money sums.
JSON (and orjson) has no Decimal, and orjson writes no integer beyond 64 bits -- it raises, and
a flush that raises would crash the worker. Some sums do leave that range: the lead
family keeps the sum of open leads' creation instants in microseconds (stream/core/leads.py), ~1.8e15
each in 2026, so one partition's vector of a scope with more than ~5,000 open leads there holds
more than 2**63, and past ~10,300 more than orjson's 2**64 - 1 (the global scope of any sizeable
pipeline). The signed range is the line here: what any JSON reader takes as an integer. So:

- a Decimal is written as its string, e.g. "1234.50";
- an int outside [-2**63, 2**63) as "int:" and its digits, e.g. "int:18446744073709551616";
- every other int (nearly all) as a JSON number.

`decode_vector` reads both back exactly. A worker older than this format reads "int:..." as a
bad Decimal and stops -- it could not have written such a vector either (it crashed instead).
"""

from __future__ import annotations

from decimal import Decimal

_INT_MIN, _INT_MAX = -(1 << 63), (1 << 63) - 1
_BIG_INT = "int:"


def encode_vector(vector: list) -> list:
    return [x if type(x) is int and _INT_MIN <= x <= _INT_MAX else _encode_other(x) for x in vector]


def _encode_other(x) -> object:
    if isinstance(x, Decimal):
        return str(x)
    if isinstance(x, int):  # outside the 64-bit range (bool never reaches a vector)
        return f"{_BIG_INT}{x}"
    return x  # float or None: JSON as it is


def decode_vector(vector: list) -> list:
    return [_decode_text(x) if isinstance(x, str) else x for x in vector]


def _decode_text(text: str) -> int | Decimal:
    if text.startswith(_BIG_INT):
        return int(text[len(_BIG_INT):])
    return Decimal(text)
