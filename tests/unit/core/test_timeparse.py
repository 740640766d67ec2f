"""parse_rfc3339_us against the oracle's reading (tests/oracle.py `instant_us`, calendar checks by
`datetime`): the parser caches dates, minutes of the day and offsets, so the cases below repeat
parts across valid and invalid strings in one process, in both orders."""

from __future__ import annotations

import random

import pytest

from stream.core.timeparse import format_rfc3339_us, parse_rfc3339_us
from tests.oracle import instant_us


def _random_timestamp(rng: random.Random) -> str:
    year = rng.choice([1, 1969, 1970, 1999, 2000, 2024, 2026, 2100, 9999])
    month = rng.choice([1, 2, 2, 3, 12, 13, 0])
    day = rng.choice([1, 28, 29, 30, 31, 32, 0])
    hour, minute, second = rng.choice([0, 9, 23, 24]), rng.choice([0, 30, 59, 60]), rng.choice([0, 7, 59, 60])
    fraction = rng.choice(["", ".5", ".123", ".123456", ".1234567891", "."])
    offset = rng.choice(["Z", "z", "+00:00", "-00:00", "+05:30", "-12:00", "+23:59", "+24:00", "-05:60", "+5:30", ""])
    separator = rng.choice("TtT ")
    return f"{year:04d}-{month:02d}-{day:02d}{separator}{hour:02d}:{minute:02d}:{second:02d}{fraction}{offset}"


def test_random_timestamps_parse_as_the_oracle_reads_them_valid_or_not():
    rng = random.Random(20261202)
    texts = [_random_timestamp(rng) for _ in range(20_000)]
    valid = 0
    for text in texts + texts[::-1]:  # the second pass meets each cached part after other strings
        expected = instant_us(text)
        assert parse_rfc3339_us(text) == expected, text
        valid += expected is not None
    assert 2_000 < valid < 38_000  # both kinds were exercised


@pytest.mark.parametrize("text", [
    "2026-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "0000-01-01T00:00:00Z", "2026-04-31T10:00:00Z",
    "2026-11-24T23:60:00Z", "2026-11-24T10:00:00+24:00", "2026-11-24T10:00:00.Z", "2026-11-24T10:00Z",
])
def test_a_rejected_part_stays_rejected_after_a_valid_string_shares_the_rest(text):
    assert parse_rfc3339_us("2026-11-24T10:00:00Z") is not None
    assert parse_rfc3339_us(text) is None
    assert instant_us(text) is None


def test_formatted_instants_parse_back_to_themselves_from_year_1_to_9999():
    rng = random.Random(7)
    for _ in range(5_000):
        instant = rng.randrange(-62_135_596_800_000_000, 253_402_300_800_000_000)
        instant -= instant % rng.choice([1, 1000, 1_000_000])  # whole seconds and milliseconds have short forms
        assert parse_rfc3339_us(format_rfc3339_us(instant)) == instant
